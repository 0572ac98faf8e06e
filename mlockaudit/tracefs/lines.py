"""``trace_pipe`` text -> trace records. Pure; shared by the live tracefs source and replay.

A line is ``<comm, right-aligned in 16 columns>-<pid> [(<tgid>)] [<cpu>] <irq flags>
<secs>.<usecs>: <event text>``: trace_print_context() prints ``%16s-%-Nd`` (N = 5 before
~5.10, 7 after), ``(%Nd)`` or ``(---)`` with record-tgid, ``[%03d]``, 4 or 5 flag chars.

The comm is raw bytes chosen by the traced process (any byte but NUL, up to 15): spaces,
dashes, digits, brackets, even a newline that splits one record over two lines. Two facts
keep the parse honest:

* the comm field is always exactly 16 bytes, because a comm has at most 15 bytes and
  ``%16s`` pads on the left; so byte 16 of a record is the ``-`` before the true pid, and
  nothing the process chose can move it;
* everything after that ``-`` is written by the kernel (for syscall tracepoints and for our
  kprobes, whose arguments are numbers), so it either parses strictly or the line is not
  a record.

A line shorter than the comm field that does not parse is kept and joined (with its
newline) to the next one; if the joined text does not parse either, the short line is
counted as unparsable and the next line is tried alone. Lines whose padding was stripped
(copied from a terminal or a log) fall back to the rightmost context match, which is just
as safe because the kernel-written tail cannot be forged by the comm.
"""

import re

from ..syscalls import KERNEL_ARG_NAMES, SYSCALL_NUMBERS

ENTRY = "entry"
EXIT = "exit"
LOST = "lost"

COMM_WIDTH = 16

# Everything after the comm field's "-". Groups: pid, tgid, cpu, secs, fraction, text.
# (Flags are 4 chars before 5.15, 5 after, more letters with lazy preemption; clocks of the
# counter type print one integer instead of secs.usecs.) Number widths are bounded by what
# the kernel prints (a pid or tgid is an int, a cpu below 2^16, a counter a u64, at most 9
# fraction digits), so that int() never reads a huge digit string; every quantifier is
# followed by a character it cannot match, so a match is linear in the line.
_PID = rb"(\d{1,10}) +(?:\( *(\d{1,10}|-{1,10})\) +)?\[(\d{1,6})\] +(?:[^ \[\]]{1,6} +)?"
_TIME = rb"(\d{1,20})(?:\.(\d{1,9}))?: "
_CONTEXT_TAIL = re.compile(_PID + _TIME + rb"(.*)\Z", re.S)
_LOST = re.compile(rb"\ACPU:(\d{1,10}) \[LOST (\d{1,20}) EVENTS\]\s*\Z")
_HEX_DIGITS = re.compile(rb"[0-9a-fA-F]{1,16}\Z")
_DEC_DIGITS = re.compile(rb"-?[0-9]{1,20}\Z")
_S64_MIN, _U64_MAX = -2 ** 63, 2 ** 64 - 1
# A probe has at most MAX_TRACE_ARGS (128) fetchargs (kernel/trace/trace_probe.h): a line
# with more values is no probe's
_MAX_PROBE_ARGS = 128

# Syscall entry symbols a kprobe may sit on -> arch (None: the arch is not in the name).
_SYMBOL_PREFIXES = (
    (b"__x64_sys_", "x86_64"), (b"__ia32_compat_sys_", "i386"), (b"__ia32_sys_", "i386"),
    (b"__arm64_compat_sys_", "arm"), (b"__arm64_sys_", "aarch64"), (b"__se_sys_", None),
    (b"__do_sys_", None), (b"SyS_", None), (b"compat_SyS_", None), (b"sys_", None),
)


# (call, x86 syscall number) -> the caller's arch, for a kprobe's ``orig_ax=`` (probes.py
# adds it where one function serves the x86_64 and the ia32 entry, munlockall's).
_X86_ARCH_BY_NUMBER = {(name, number): arch for arch in ("x86_64", "i386")
                       for name, number in SYSCALL_NUMBERS[arch].items()}


class TraceLineError(ValueError):
    """A line that is not a trace record; ``reason`` is a short label for counting."""

    def __init__(self, reason):
        ValueError.__init__(self, reason)
        self.reason = reason


class TraceRecord(object):
    """One parsed line: an entry (``args``: raw values in Tracee's order), an exit
    (``ret``), or a loss notice (``lost`` events on ``cpu``). ``comm_field`` is the raw
    context column (see :func:`decode_comm`): decoding waits until a process is first seen."""

    __slots__ = ("kind", "name", "tid", "tgid", "comm_field", "cpu", "ts_ns", "args",
                 "ret", "arch", "lost", "probe")

    def __init__(self, kind, name, tid, tgid, comm_field, cpu, ts_ns, args=None, ret=None,
                 arch=None, lost=None, probe="tracepoint"):
        self.kind = kind
        self.name = name
        self.tid = tid
        self.tgid = tgid
        self.comm_field = comm_field
        self.cpu = cpu
        self.ts_ns = ts_ns
        self.args = args
        self.ret = ret
        self.arch = arch
        self.lost = lost
        self.probe = probe

    @property
    def comm(self):
        return decode_comm(self.comm_field)

    def __repr__(self):
        return "TraceRecord(%s %s tid=%s comm=%r args=%r ret=%r)" % (
            self.kind, self.name, self.tid, self.comm_field, self.args, self.ret)


def decode_comm(field):
    """The context column's comm: padding removed, ``<...>`` (unknown) as None.

    Leading spaces of a comm look exactly like the padding and are lost: the trace text
    cannot represent them (live sources take the comm from elsewhere)."""
    if field is None:
        return None
    comm = field.lstrip(b" ")
    if comm == b"<...>" or not comm:
        return None
    return comm.decode("utf-8", "surrogateescape")


# The common case in one match: a syscall tracepoint entry or exit after the comm field.
# Groups: pid, tgid, cpu, secs, fraction, call name, entry arguments, exit value.
_TRACEPOINT_TAIL = re.compile(
    _PID + _TIME + rb"sys_(\w{1,64})(?:\(([^()]*)\)| -> (?:0x)?([0-9a-fA-F]{1,16})) *\n?\Z")

# Tracee's argument order and the names a trace line may give each argument. Every call of
# the family takes a prefix-free subset of (addr, len, flags) in this order, so the values
# present, in this order, are the call's arguments.
_ARG_NAMES = ((b"start", b"addr"), (b"len",), (b"flags",))
_ARGS_CACHE = {}
_CALL_NAMES = {name.encode(): name for name in ("mlock", "mlock2", "munlock", "mlockall",
                                                 "munlockall", "mmap", "shmctl", "setrlimit",
                                                 "prlimit64")}


def args_in_tracee_order(values, name=None):
    """{field name: int} -> the tuple of values present, in Tracee's argument order. The
    surface's other calls (mmap, shmctl, ...) are named by the kernel's argument names
    (the tracepoint's fields, which our kprobes use too); absent ones are None."""
    kernel_names = KERNEL_ARG_NAMES.get(name)
    if kernel_names is not None:
        return tuple(values.get(key.encode()) for key in kernel_names)
    args = []
    for names in _ARG_NAMES:
        for name in names:
            if name in values:
                args.append(values[name])
                break
    return tuple(args)


def _tracepoint_args(inner, name=None):
    """``start: 0x7f.., len: 0x2000, flags: 1`` -> (addr, len, flags). Calls often repeat
    their arguments (the same buffer locked again), so the parse is memoized: bounded at
    4096 argument texts (the working set of a busy host; a storm of distinct buffers
    clears and refills it, as each miss costs only this parse)."""
    key = inner if name not in KERNEL_ARG_NAMES else (name, inner)
    args = _ARGS_CACHE.get(key)
    if args is None:
        values = {}
        if inner:
            for part in inner.split(b", "):
                key, sep, value = part.partition(b": ")
                if not sep:
                    raise TraceLineError("bad tracepoint argument")
                # 16 letters or digits at most (no sign, space or "_", which int() would
                # take): int() reads them as the kernel wrote them, or fails; the rest,
                # and what fails, is checked by _hex (which says why)
                if len(value) <= 16 and value.isalnum():
                    try:
                        values[key] = int(value, 16)
                        continue
                    except ValueError:
                        pass
                values[key] = _hex(value)
        args = args_in_tracee_order(values, name)
        if len(_ARGS_CACHE) >= 4096:
            _ARGS_CACHE.clear()
        _ARGS_CACHE[key] = args
    return args


def _hex(value):
    """A register value as the kernel prints it in hex (``%lx``, ``0x%lx``, ``0x%Lx``): at
    most 16 digits. Anything else (a sign, underscores, spaces, which int() would take)
    is not a kernel value: TraceLineError."""
    digits = value[2:] if value[:2] in (b"0x", b"0X") else value
    if _HEX_DIGITS.match(digits) is None:
        raise TraceLineError("number out of range" if len(digits) > 16 and
                             _HEX_DIGITS.match(digits[:16]) else "bad hex value")
    return int(digits, 16)


def _dec(value):
    """A decimal kprobe value (``%Lu`` or ``%Ld``): within u64 or s64, else TraceLineError."""
    if _DEC_DIGITS.match(value) is None:
        digits = value[1:] if value[:1] == b"-" else value
        raise TraceLineError("number out of range" if digits.isdigit() else "bad number")
    number = int(value)
    if not _S64_MIN <= number <= _U64_MAX:
        raise TraceLineError("number out of range")
    return number


def _ts_ns(secs, frac):
    if frac is None:                 # counter-type clocks print one raw integer
        return int(secs)
    if len(frac) == 6:
        return int(secs) * 1000000000 + int(frac) * 1000
    frac = frac[:9]
    return int(secs) * 1000000000 + int(frac) * 10 ** (9 - len(frac))


def _hex_or_dec(value, bare_hex=False):
    """kprobe values: 0x-prefixed hex (x-types), else decimal (u/s types) on current
    kernels; kernels without x-types print u-types as bare hex (``bare_hex``): decided per
    kernel by the caller (tracing/README live, the capture's ``kernel=`` in replay), never
    guessed per value."""
    if value[:2] in (b"0x", b"0X"):
        return _hex(value)
    if bare_hex and value[:1] != b"-":
        return _hex(value)
    return _dec(value)


def parse_event_text(text, bare_hex=False):
    """The event part of a line -> (kind, name, args/ret, arch, probe).

    Forms:
      ``sys_mlock2(start: 0x7f.., len: 0x2000, flags: 1)``       syscall tracepoint entry
      ``sys_mlock2 -> 0xffffffffffffffea``                       syscall tracepoint exit
      ``mlock2: (__x64_sys_mlock2+0x0/0x40) start=0x7f.. len=8192 flags=0x1``   kprobe
      ``mlock2_ret: (do_syscall_64+0x5b/0xc0 <- __x64_sys_mlock2) ret=-22``      kretprobe
      ``munlockall: (__do_sys_munlockall+0x0/0xa0) orig_ax=153``  kprobe on an alias: the
      x86 syscall number gives the arch the symbol does not (here i386)
    Tracepoint values are hex: old kernels print ``%lx`` without 0x, new ones ``0x%lx`` and
    single digits bare, which read the same in base 16. The exit value is a 64-bit register.
    """
    text = text.rstrip()
    if text.startswith(b"sys_"):
        paren = text.find(b"(")
        if paren > 0 and text.endswith(b")"):
            name = text[4:paren].decode("ascii", "replace")
            return ENTRY, name, _tracepoint_args(text[paren + 1:-1], name), None, "tracepoint"
        arrow = text.find(b" -> ")
        if arrow > 0:
            name = text[4:arrow].decode("ascii", "replace")
            return EXIT, name, _hex(text[arrow + 4:].strip()), None, "tracepoint"
        raise TraceLineError("bad tracepoint text")
    colon = text.find(b": (")
    if colon > 0:
        close = text.find(b")", colon + 3)
        if close < 0:
            raise TraceLineError("bad probe text")
        event_name = text[:colon]
        where = text[colon + 3:close]
        values = {}
        parts = text[close + 1:].split(None, _MAX_PROBE_ARGS)
        if len(parts) > _MAX_PROBE_ARGS:
            raise TraceLineError("bad probe text")
        for part in parts:
            key, sep, value = part.partition(b"=")
            if not sep:
                raise TraceLineError("bad probe argument")
            values[key] = _hex_or_dec(value, bare_hex and key != b"ret")
        arrow = where.find(b" <- ")
        symbol = where[arrow + 4:] if arrow >= 0 else where
        plus = symbol.find(b"+")
        if plus >= 0:
            symbol = symbol[:plus]
        name, arch = _call_from_symbol(symbol, event_name)
        if arch is None and b"orig_ax" in values:
            arch = _X86_ARCH_BY_NUMBER.get((name, values[b"orig_ax"]))
        if arrow >= 0:
            ret = values.get(b"ret")
            if ret is None:
                ret = values.get(b"retval")
            return EXIT, name, ret, arch, "kprobe"
        return ENTRY, name, args_in_tracee_order(values, name), arch, "kprobe"
    raise TraceLineError("unknown event text")


def _call_from_symbol(symbol, event_name):
    for prefix, arch in _SYMBOL_PREFIXES:
        if symbol.startswith(prefix):
            return symbol[len(prefix):].decode("ascii", "replace"), arch
    name = event_name.decode("ascii", "replace")
    for suffix in ("_ret", "_return", "_exit", "_entry"):
        if name.endswith(suffix):
            return name[:-len(suffix)], None
    return name, None


def _record(comm_field, match_groups, bare_hex=False):
    pid, tgid, cpu, secs, frac, text = match_groups
    kind, name, payload, arch, probe = parse_event_text(text, bare_hex)
    tgid = int(tgid) if tgid is not None and tgid[:1] != b"-" else None
    if kind == ENTRY:
        return TraceRecord(ENTRY, name, int(pid), tgid, comm_field, int(cpu), _ts_ns(secs, frac),
                           payload, None, arch, None, probe)
    return TraceRecord(EXIT, name, int(pid), tgid, comm_field, int(cpu), _ts_ns(secs, frac),
                       None, payload, arch, None, probe)


def parse_line(line, bare_hex=False):
    """One complete record's text -> TraceRecord, or raise TraceLineError. A trailing
    newline is allowed (and ignored). ``bare_hex``: see _hex_or_dec."""
    if line[COMM_WIDTH:COMM_WIDTH + 1] == b"-" and line[:1] == b" ":
        match = _TRACEPOINT_TAIL.match(line, COMM_WIDTH + 1)
        if match is not None:
            pid_bytes, tgid, cpu, secs, frac, name, inner, ret = match.groups()
            pid = int(pid_bytes)
            if tgid is not None:
                if tgid == pid_bytes:                        # the main thread
                    tgid = pid
                else:
                    tgid = int(tgid) if tgid[:1] != b"-" else None
            name = _CALL_NAMES.get(name) or name.decode("ascii", "replace")
            if frac is not None and len(frac) == 6:          # secs.usecs, the usual clock
                ts_ns = int(secs) * 1000000000 + int(frac) * 1000
            else:
                ts_ns = _ts_ns(secs, frac)
            if ret is None:
                return TraceRecord(ENTRY, name, pid, tgid, line[:COMM_WIDTH], int(cpu), ts_ns,
                                   _tracepoint_args(inner, name))
            return TraceRecord(EXIT, name, pid, tgid, line[:COMM_WIDTH], int(cpu), ts_ns, None,
                               int(ret, 16))
        match = _CONTEXT_TAIL.match(line, COMM_WIDTH + 1)
        if match is not None:
            return _record(line[:COMM_WIDTH], match.groups(), bare_hex)
    lost = _LOST.match(line)
    if lost is not None:
        return TraceRecord(LOST, None, None, None, None, int(lost.group(1)), None,
                           lost=int(lost.group(2)), probe=None)
    comm, groups = _loose_context(line)
    return _record(comm, groups, bare_hex)


def _loose_context(line):
    """(comm, context groups) of a line that lost its left padding (copied from a terminal
    or a log), or TraceLineError.

    The comm has at most 15 bytes, so the ``-`` before the true pid is among the first 16
    bytes after the leading spaces; the candidates are tried from the right (the rightmost
    context wins: the kernel-written tail cannot be forged by the comm), each with the
    anchored tail match. At most 16 linear attempts: linear in the line (a regex with
    ``(.*)-`` in front backtracked quadratically over a long run of spaces)."""
    start = len(line) - len(line.lstrip(b" "))
    window = line[start:start + COMM_WIDTH]
    dash = window.rfind(b"-")
    while dash >= 0:
        match = _CONTEXT_TAIL.match(line, start + dash + 1)
        if match is not None:
            return line[start:start + dash], match.groups()
        dash = window.rfind(b"-", 0, dash)
    # for the reason only: would a context match further right (a comm too long)?
    dash = line.find(b"-", start + COMM_WIDTH)
    if dash >= 0 and _CONTEXT_TAIL.match(line, dash + 1) is not None:
        raise TraceLineError("comm longer than 15 bytes")
    raise TraceLineError("not a trace line")


class LineParser(object):
    """Feeds complete lines in, gets TraceRecords out; joins records split by a newline in
    the comm. Counts what it could not parse by reason (``rejected``)."""

    def __init__(self, bare_hex=False):
        self.bare_hex = bare_hex
        self._carry = None
        self._carry_lines = 0
        self.rejected = {}     # reason -> lines
        self.parsed = 0        # lines that belonged to a parsed record
        self.skipped = 0       # blank and '#' header lines

    def _reject(self, reason, lines=1):
        self.rejected[reason] = self.rejected.get(reason, 0) + lines

    def records(self, lines):
        """Iterate TraceRecords from an iterable of lines (with or without newlines)."""
        feed = self.feed
        for line in lines:
            if self._carry is None and line[COMM_WIDTH:COMM_WIDTH + 1] == b"-":
                try:                                 # the common case, without feed()
                    record = parse_line(line, self.bare_hex)   # (newline allowed)
                except TraceLineError as exc:
                    # 17 bytes or more: no comm fragment to carry, and the parse without
                    # the newline would say the same: counted here, not parsed twice
                    if line[:1] == b"#":
                        self.skipped += 1
                    else:
                        self._reject(exc.reason)
                    continue
                except ValueError:
                    record = None
                if record is not None:
                    self.parsed += 1
                    yield record
                    continue
            if line[-1:] == b"\n":
                line = line[:-1]
            record = feed(line)
            if record is not None:
                yield record
        self.finish()

    def feed(self, line):
        """One line without its newline -> TraceRecord or None (header, carried, rejected)."""
        carry = self._carry
        if carry is not None:
            self._carry = None
            joined = carry + b"\n" + line
            try:
                record = parse_line(joined, self.bare_hex)
                self.parsed += self._carry_lines + 1
                return record
            except ValueError:
                if len(joined) <= COMM_WIDTH:       # still inside the comm field
                    self._carry = joined
                    self._carry_lines += 1
                    return None
                self._reject("unparsable line", self._carry_lines)
        if not line or line[:1] == b"#" or (len(line) >= COMM_WIDTH and line.isspace()):
            self.skipped += 1            # (short blank lines may be a comm's padding)
            return None
        try:
            record = parse_line(line, self.bare_hex)
            self.parsed += 1
            return record
        except TraceLineError as exc:
            if len(line) < COMM_WIDTH:
                self._carry = line
                self._carry_lines = 1
            else:
                self._reject(exc.reason)
        except ValueError:                  # (every value is checked before int(): spare)
            self._reject("bad number")
        return None

    def finish(self):
        """End of input: a carried fragment that never completed is rejected."""
        if self._carry is not None:
            self._carry = None
            self._reject("unparsable line", self._carry_lines)
