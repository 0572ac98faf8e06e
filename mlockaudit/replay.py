"""``mlockaudit replay FILE``: a saved capture -> the same events ``start`` would emit.

Two capture kinds, told apart by a majority over their first lines unless ``--source``
says (see detect_source):

* audit: auditd's log (``[node=H ]type=SYSCALL msg=audit(...): ...``), ``ausearch --raw``
  output, or mlockaudit's own raw capture, which writes the same format;
* trace: ``trace_pipe`` / ``trace`` text from syscall tracepoints or kprobes. A header
  line ``# mlockaudit-capture: clock=boot epoch_offset_ns=N arch=x86_64 hostname=H
  kernel=R long_bits=64 [x_types=1]`` (written by ``scripts/capture``) anchors the trace
  clock to wall time and says how the kernel printed its values (see CaptureHeader);
  without it the events carry ``timestamp: null`` and the raw trace time in
  ``mlockaudit.traceClockNs``, and a 64-bit kernel with kprobe x-types is assumed.

Every line is accounted for: used, ignored (other record types, other syscalls,
headers), or rejected with a reason. The counts go to stderr at the end.

Errors are told apart by where they happen: reading the input (a file that cannot be
read, a corrupt or truncated ``.gz``) is a ReplayError "cannot read"; writing an output
(a full disk, ``> /dev/full``) raises the transport's OutputWriteError, which this module
never catches.
"""

import itertools
import re
import sys
import zlib

from .audit.assembler import Assembler
from .audit.records import RecordError, parse_log_line
from .event import MAX_TIMESTAMP_NS
from .syscalls import MACHINE_ARCH, SYSCALL_NUMBERS
from .tracefs.lines import LineParser, parse_line
from .tracefs.pairing import Pairer

CAPTURE_HEADER = b"# mlockaudit-capture:"

#: How many meaningful lines (neither blank nor ``#``) detect_source reads, and how many
#: raw lines at most it looks through to find them.
DETECT_LINES = 200
DETECT_MAX_RAW_LINES = 2000

#: Kprobe fetch types ``x8/16/32/64`` (0x-prefixed hex) came with the probe-event type rework
#: that also made the ``u`` types print in decimal; before it ``u32``/``u64`` printed bare
#: hex (``%lx``/``%llx``, e.g. 3.10's trace_probe.c). DepSurf's kernel index has
#: ``print_type_x8`` absent in 4.8.0 and present from 4.10.0 (Ubuntu kernels); it is the
#: 4.9 merge window ("Add x8/x16/x32/x64 for hexadecimal types"). Live, the backend reads
#: ``tracing/README`` instead; a capture's ``x_types=`` says it outright.
X_TYPES_SINCE = (4, 9)

_RELEASE = re.compile(r"(\d{1,4})\.(\d{1,4})")
_OFFSET = re.compile(r"-?\d{1,20}\Z")


class ReplayError(Exception):
    """The file cannot be replayed at all (unreadable, unknown kind)."""


class ReplayStats(object):
    """Where every line of a capture went: ``lines == parsed + skipped + rejected``."""

    def __init__(self, source):
        self.source = source
        self.lines = 0
        self.parsed = 0        # lines that were valid records (of any type or syscall)
        self.skipped = 0       # blank lines and comment/header lines
        self.rejected = {}     # reason -> count of lines (reasons are fixed labels)
        self.events = 0
        self.incomplete = 0
        self.lost = 0          # losses the capture itself reports (trace LOST lines)
        self.notes = []        # what the summary must say beyond the counts

    @property
    def rejected_total(self):
        return sum(self.rejected.values())

    def reject(self, reason, count=1):
        self.rejected[reason] = self.rejected.get(reason, 0) + count

    def summary(self):
        parts = ["replay (%s): %d lines, %d parsed, %d skipped" % (
            self.source, self.lines, self.parsed, self.skipped)]
        parts.append("%d events" % self.events)
        if self.incomplete:
            parts.append("%d incomplete" % self.incomplete)
        if self.lost:
            parts.append("lost=%d (reported by the capture)" % self.lost)
        if self.rejected:
            detail = ", ".join("%s: %d" % item for item in sorted(self.rejected.items()))
            parts.append("%d lines rejected (%s)" % (self.rejected_total, detail))
        else:
            parts.append("0 lines rejected")
        return "; ".join(parts + self.notes)


def open_capture(path):
    """Binary stream for a path, ``-`` (stdin) or a .gz file (rotated logs)."""
    if path == "-":
        return sys.stdin.buffer
    try:
        handle = open(path, "rb")
        if handle.peek(2)[:2] == b"\x1f\x8b":
            import gzip
            return gzip.GzipFile(fileobj=handle)
    except OSError as exc:
        raise ReplayError("cannot read %s: %s" % (path, exc.strerror or exc))
    return handle


def _is_audit_record(line):
    try:
        parse_log_line(line)
        return True
    except RecordError:
        return False


def _is_trace_record(line):
    for bare_hex in (False, True):
        try:
            parse_line(line, bare_hex)
            return True
        except ValueError:
            continue
    return False


def detect_source(head_lines):
    """'audit', 'trace' or None, by a majority over the first DETECT_LINES meaningful
    lines, each checked against each kind's whole, anchored grammar (parse_log_line,
    parse_line). A traced process cannot forge either: its comm (15 bytes, which may
    hold a newline) is shorter than any audit record, and every trace line ends in text
    the kernel wrote; a prefix such as ``type=`` (a comm ``type=\\nx`` at the start of
    a trace) decides nothing. ``#`` lines (headers, comments) do not vote."""
    votes = {"audit": 0, "trace": 0}
    seen = 0
    for line in head_lines:
        if line[-1:] == b"\n":
            line = line[:-1]
        if not line.strip() or line[:1] == b"#":
            continue
        seen += 1
        if seen > DETECT_LINES or max(votes.values()) * 2 > DETECT_LINES:
            break                                   # (a majority of DETECT_LINES: decided)
        if _is_audit_record(line):
            votes["audit"] += 1
        elif _is_trace_record(line):
            votes["trace"] += 1
    if votes["audit"] == votes["trace"]:
        return None
    return "audit" if votes["audit"] > votes["trace"] else "trace"


class CaptureHeader(object):
    """What ``# mlockaudit-capture: k=v ...`` says, each value checked.

    ``clock_offset_ns`` (trace clock -> epoch ns; None: no anchor), ``arch`` (ours, from
    the kernel's machine), ``hostname``, ``kernel`` (release tuple), ``long_bits`` (the
    kernel's ``long``: 64, or 32 on i386/arm kernels; given, else from the arch),
    ``bare_hex`` (kprobe u-types printed as bare hex: ``x_types=0``, else a kernel before
    X_TYPES_SINCE). ``problems``: one text per value that was ignored."""

    def __init__(self, line=None):
        self.fields = {}
        self.problems = []
        self.clock_offset_ns = None
        self.arch = None
        self.hostname = None
        self.kernel = None
        self.long_bits = 64
        self.bare_hex = False
        if line is not None:
            self._parse(line)

    def _parse(self, line):
        for token in line[len(CAPTURE_HEADER):].split():
            key, _, value = token.partition(b"=")
            self.fields.setdefault(key.decode("ascii", "replace"),
                                   value.decode("utf-8", "replace"))
        get = self.fields.get
        offset = get("epoch_offset_ns")
        if offset is not None:
            if _OFFSET.match(offset) and abs(int(offset)) <= MAX_TIMESTAMP_NS:
                self.clock_offset_ns = int(offset)
            else:
                self._problem("epoch_offset_ns", offset, "no clock anchor: timestamps are null")
        machine = get("arch")
        if machine is not None:
            self.arch = MACHINE_ARCH.get(machine) or (machine if machine in SYSCALL_NUMBERS
                                                      else None)
            if self.arch is None:
                self._problem("arch", machine, "not an arch mlockaudit knows")
        self.hostname = get("hostname") or None
        release = get("kernel")
        if release is not None:
            match = _RELEASE.match(release)
            if match:
                self.kernel = (int(match.group(1)), int(match.group(2)))
            else:
                self._problem("kernel", release, "not a kernel release")
        bits = get("long_bits")
        if bits in ("32", "64"):
            self.long_bits = int(bits)
        else:
            if bits is not None:
                self._problem("long_bits", bits, "not 32 or 64")
            if self.arch in ("i386", "arm"):
                self.long_bits = 32
        x_types = get("x_types")
        if x_types in ("0", "1"):
            self.bare_hex = x_types == "0"
        else:
            if x_types is not None:
                self._problem("x_types", x_types, "not 0 or 1")
            self.bare_hex = self.kernel is not None and self.kernel < X_TYPES_SINCE

    def _problem(self, key, value, consequence):
        shown = value if len(value) <= 40 else value[:40] + "..."
        self.problems.append("%s=%r ignored (%s)" % (key, shown, consequence))


def parse_capture_header(line):
    """``# mlockaudit-capture: k=v ...`` -> {str: str} (unchecked; see CaptureHeader)."""
    return CaptureHeader(line).fields


def _head(stream):
    """The first lines of a stream, enough for detect_source (read, to be replayed too)."""
    head = []
    meaningful = 0
    for line in stream:
        head.append(line)
        if line.strip() and line[:1] != b"#":
            meaningful += 1
        if meaningful >= DETECT_LINES or len(head) >= DETECT_MAX_RAW_LINES:
            break
    return head


def replay(path, emit, source="auto", events=None):
    """Replay one capture; ``emit(event)`` for each call. Returns ReplayStats."""
    stream = open_capture(path)
    try:
        head = _head(stream)
        if source == "auto":
            source = detect_source(head)
            if source is None:
                raise ReplayError(
                    "%s: neither an audit log (type=... msg=audit(...)) nor trace_pipe text; "
                    "use --source audit|trace to force one" % path)
        wanted = frozenset(events) if events else None
        lines = itertools.chain(head, stream)
        if source == "audit":
            return _replay_audit(lines, emit, wanted)
        return _replay_trace(lines, emit, wanted)
    except BrokenPipeError:
        raise
    # Reading only: unreadable file, corrupt .gz (zlib.error, BadGzipFile), truncated .gz
    # (EOFError). Writes fail with the transports' OutputWriteError, which passes through.
    except (OSError, EOFError, zlib.error) as exc:
        raise ReplayError("cannot read %s: %s" % (path, exc))
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _replay_audit(lines, emit, wanted):
    stats = ReplayStats("audit")
    assembler = Assembler(emit, max_pending=4096, wanted=wanted)
    feed = assembler.feed
    count = 0
    skipped = 0
    for line in lines:
        count += 1
        if line[-1:] == b"\n":
            line = line[:-1]
        if not line or line.isspace() or line[:1] == b"#":
            skipped += 1
            continue
        try:
            rtype, stamp, body, node = parse_log_line(line)
            feed(rtype, stamp, body, node)
        except RecordError as exc:
            stats.reject(exc.reason)
        except ValueError:                   # (every value is checked: a spare)
            stats.reject("bad value")
    assembler.flush()
    stats.lines = count
    stats.skipped = skipped
    stats.parsed = count - skipped - stats.rejected_total
    stats.events = assembler.events
    stats.incomplete = assembler.incomplete
    if assembler.collisions:
        stats.notes.append("%d foreign SYSCALL records had the stamp of a call (logs of "
                           "several hosts without node=?)" % assembler.collisions)
    return stats


def _replay_trace(lines, emit, wanted):
    stats = ReplayStats("trace")
    first = next(lines, None)
    if first is not None and first.startswith(CAPTURE_HEADER):
        header = CaptureHeader(first)
        stats.lines += 1
        if header.problems:
            stats.reject("bad capture header")
            stats.notes.append("capture header: " + "; ".join(header.problems))
        else:
            stats.skipped += 1
    else:
        header = CaptureHeader()
        if first is not None:
            lines = itertools.chain((first,), lines)
    parser = LineParser(bare_hex=header.bare_hex)
    pairer = Pairer(emit, arch=header.arch, events=wanted,
                    clock_offset_ns=header.clock_offset_ns, hostname=header.hostname,
                    long_bits=header.long_bits)
    feed = pairer.feed
    for record in parser.records(lines):
        feed(record)
    pairer.flush()
    stats.events = pairer.events
    stats.incomplete = pairer.incomplete
    stats.lost = pairer.lost
    for reason, count in parser.rejected.items():
        stats.reject(reason, count)
    stats.skipped += parser.skipped
    stats.parsed = parser.parsed
    stats.lines += parser.parsed + parser.skipped + sum(parser.rejected.values())
    return stats
