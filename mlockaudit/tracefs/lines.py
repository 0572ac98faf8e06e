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

ENTRY = "entry"
EXIT = "exit"
LOST = "lost"

COMM_WIDTH = 16

# Everything after the comm field's "-". Groups: pid, tgid, cpu, secs, fraction, text.
# (Flags are 4 chars before 5.15, 5 after, more letters with lazy preemption; clocks of the
# counter type print one integer instead of secs.usecs.)
_CONTEXT_TAIL = re.compile(
    rb"(\d+) +(?:\( *(\d+|-+)\) +)?\[(\d+)\] +(?:[^ \[\]]{1,6} +)?(\d+)(?:\.(\d+))?: (.*)\Z", re.S)
# The same, with the comm in front, for lines that lost their left padding.
_CONTEXT_LOOSE = re.compile(
    rb"\A *(.*)-(\d+) +(?:\( *(\d+|-+)\) +)?\[(\d+)\] +(?:[^ \[\]]{1,6} +)?(\d+)(?:\.(\d+))?: (.*)\Z",
    re.S)
_LOST = re.compile(rb"\ACPU:(\d+) \[LOST (\d+) EVENTS\]\s*\Z")

# Syscall entry symbols a kprobe may sit on -> arch (None: the arch is not in the name).
_SYMBOL_PREFIXES = (
    (b"__x64_sys_", "x86_64"), (b"__ia32_compat_sys_", "i386"), (b"__ia32_sys_", "i386"),
    (b"__arm64_compat_sys_", "arm"), (b"__arm64_sys_", "aarch64"), (b"__se_sys_", None),
    (b"__do_sys_", None), (b"SyS_", None), (b"compat_SyS_", None), (b"sys_", None),
)


class TraceLineError(ValueError):
    """A line that is not a trace record; ``reason`` is a short label for counting."""

    def __init__(self, reason):
        ValueError.__init__(self, reason)
        self.reason = reason


class TraceRecord(object):
    """One parsed line: an entry (``values`` = args by name), an exit (``ret``), or a loss
    notice (``lost`` events on ``cpu``)."""

    __slots__ = ("kind", "name", "tid", "tgid", "comm", "cpu", "ts_ns", "values", "ret",
                 "arch", "lost", "probe")

    def __init__(self, kind, name=None, tid=None, tgid=None, comm=None, cpu=None, ts_ns=None,
                 values=None, ret=None, arch=None, lost=None, probe=None):
        self.kind = kind
        self.name = name
        self.tid = tid
        self.tgid = tgid
        self.comm = comm
        self.cpu = cpu
        self.ts_ns = ts_ns
        self.values = values
        self.ret = ret
        self.arch = arch
        self.lost = lost
        self.probe = probe

    def __repr__(self):
        return "TraceRecord(%s %s tid=%s comm=%r values=%r ret=%r)" % (
            self.kind, self.name, self.tid, self.comm, self.values, self.ret)


def _comm(field):
    """The context column's comm: padding removed, ``<...>`` (unknown) as None."""
    comm = field.lstrip(b" ")
    if comm == b"<...>" or not comm:
        return None
    return comm.decode("utf-8", "surrogateescape")


def _hex_or_dec(value):
    return int(value, 16) if value[:2] in (b"0x", b"0X") else int(value)


def parse_event_text(text):
    """The event part of a line -> (kind, name, values/ret, arch, probe).

    Forms:
      ``sys_mlock2(start: 0x7f.., len: 0x2000, flags: 1)``       syscall tracepoint entry
      ``sys_mlock2 -> 0xffffffffffffffea``                       syscall tracepoint exit
      ``mlock2: (__x64_sys_mlock2+0x0/0x40) start=0x7f.. len=8192 flags=0x1``   kprobe
      ``mlock2_ret: (do_syscall_64+0x5b/0xc0 <- __x64_sys_mlock2) ret=-22``      kretprobe
    Tracepoint values are hex: old kernels print ``%lx`` without 0x, new ones ``0x%lx`` and
    single digits bare, which read the same in base 16. The exit value is a 64-bit register.
    """
    text = text.rstrip()
    if text.startswith(b"sys_"):
        paren = text.find(b"(")
        if paren > 0 and text.endswith(b")"):
            name = text[4:paren].decode("ascii", "replace")
            values = {}
            inner = text[paren + 1:-1]
            if inner:
                for part in inner.split(b", "):
                    key, sep, value = part.partition(b": ")
                    if not sep:
                        raise TraceLineError("bad tracepoint argument")
                    values[key.decode("ascii", "replace")] = int(value, 16)
            return ENTRY, name, values, None, "tracepoint"
        arrow = text.find(b" -> ")
        if arrow > 0:
            name = text[4:arrow].decode("ascii", "replace")
            return EXIT, name, int(text[arrow + 4:].strip(), 16), None, "tracepoint"
        raise TraceLineError("bad tracepoint text")
    colon = text.find(b": (")
    if colon > 0:
        close = text.find(b")", colon + 3)
        if close < 0:
            raise TraceLineError("bad probe text")
        event_name = text[:colon]
        where = text[colon + 3:close]
        values = {}
        for part in text[close + 1:].split():
            key, sep, value = part.partition(b"=")
            if not sep:
                raise TraceLineError("bad probe argument")
            values[key.decode("ascii", "replace")] = _hex_or_dec(value)
        arrow = where.find(b" <- ")
        symbol = where[arrow + 4:] if arrow >= 0 else where
        plus = symbol.find(b"+")
        if plus >= 0:
            symbol = symbol[:plus]
        name, arch = _call_from_symbol(symbol, event_name, arrow >= 0)
        if arrow >= 0:
            ret = values.get("ret")
            if ret is None:
                ret = values.get("retval")
            return EXIT, name, ret, arch, "kprobe"
        return ENTRY, name, values, arch, "kprobe"
    raise TraceLineError("unknown event text")


def _call_from_symbol(symbol, event_name, is_return):
    for prefix, arch in _SYMBOL_PREFIXES:
        if symbol.startswith(prefix):
            return symbol[len(prefix):].decode("ascii", "replace"), arch
    name = event_name.decode("ascii", "replace")
    for suffix in ("_ret", "_return", "_exit", "_entry"):
        if name.endswith(suffix):
            return name[:-len(suffix)], None
    return name, None


def _record(comm_field, match_groups):
    pid, tgid, cpu, secs, frac, text = match_groups
    kind, name, payload, arch, probe = parse_event_text(text)
    tgid = int(tgid) if tgid is not None and tgid[:1] != b"-" else None
    if frac is None:                 # counter-type clocks print one raw integer
        ts_ns = int(secs)
    else:
        frac = frac[:9]
        ts_ns = int(secs) * 1000000000 + int(frac) * 10 ** (9 - len(frac))
    if kind == ENTRY:
        return TraceRecord(ENTRY, name, int(pid), tgid, _comm(comm_field), int(cpu), ts_ns,
                           values=payload, arch=arch, probe=probe)
    return TraceRecord(EXIT, name, int(pid), tgid, _comm(comm_field), int(cpu), ts_ns,
                       ret=payload, arch=arch, probe=probe)


def parse_line(line):
    """One complete record's text (newline removed) -> TraceRecord, or raise TraceLineError."""
    if line[COMM_WIDTH:COMM_WIDTH + 1] == b"-" and line[:1] == b" ":
        match = _CONTEXT_TAIL.match(line, COMM_WIDTH + 1)
        if match is not None:
            return _record(line[:COMM_WIDTH], match.groups())
    lost = _LOST.match(line)
    if lost is not None:
        return TraceRecord(LOST, cpu=int(lost.group(1)), lost=int(lost.group(2)))
    match = _CONTEXT_LOOSE.match(line)
    if match is None:
        raise TraceLineError("not a trace line")
    groups = match.groups()
    if len(groups[0]) >= COMM_WIDTH:
        raise TraceLineError("comm longer than 15 bytes")
    return _record(groups[0], groups[1:])


class LineParser(object):
    """Feeds complete lines in, gets TraceRecords out; joins records split by a newline in
    the comm. Counts what it could not parse by reason (``rejected``)."""

    def __init__(self):
        self._carry = None
        self._carry_lines = 0
        self.rejected = {}     # reason -> lines
        self.parsed = 0        # lines that belonged to a parsed record
        self.skipped = 0       # blank and '#' header lines

    def _reject(self, reason, lines=1):
        self.rejected[reason] = self.rejected.get(reason, 0) + lines

    def feed(self, line):
        """One line without its newline -> TraceRecord or None (header, carried, rejected)."""
        carry = self._carry
        if carry is not None:
            self._carry = None
            joined = carry + b"\n" + line
            try:
                record = parse_line(joined)
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
            record = parse_line(line)
            self.parsed += 1
            return record
        except TraceLineError as exc:
            if len(line) < COMM_WIDTH:
                self._carry = line
                self._carry_lines = 1
            else:
                self._reject(exc.reason)
        except ValueError:
            self._reject("bad number")
        return None

    def finish(self):
        """End of input: a carried fragment that never completed is rejected."""
        if self._carry is not None:
            self._carry = None
            self._reject("unparsable line", self._carry_lines)
