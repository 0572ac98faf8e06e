"""``mlockaudit replay FILE``: a saved capture -> the same events ``start`` would emit.

Two capture kinds, told apart by their first records unless ``--source`` says:

* audit: auditd's log (``[node=H ]type=SYSCALL msg=audit(...): ...``), ``ausearch --raw``
  output, or mlockaudit's own raw capture, which writes the same format;
* trace: ``trace_pipe`` / ``trace`` text from syscall tracepoints or kprobes. A header
  line ``# mlockaudit-capture: clock=boot epoch_offset_ns=N arch=x86_64 hostname=H``
  (written by ``scripts/capture``) anchors the trace clock to wall time; without it the
  events carry ``timestamp: null`` and the raw trace time in ``mlockaudit.traceClockNs``.

Every line is accounted for: used, ignored (other record types, other syscalls,
headers), or rejected with a reason. The counts go to stderr at the end.
"""

import gzip
import io
import sys

from .audit.assembler import Assembler
from .audit.records import RecordError, parse_log_line
from .tracefs.lines import LineParser
from .tracefs.pairing import Pairer

CAPTURE_HEADER = b"# mlockaudit-capture:"


class ReplayError(Exception):
    """The file cannot be replayed at all (unreadable, unknown kind)."""


class ReplayStats(object):
    """Where every line of a capture went: ``lines == parsed + skipped + rejected``."""

    def __init__(self, source):
        self.source = source
        self.lines = 0
        self.parsed = 0        # lines that were valid records (of any type or syscall)
        self.skipped = 0       # blank lines and comment/header lines
        self.rejected = {}     # reason -> count of lines
        self.events = 0
        self.incomplete = 0
        self.lost = 0          # losses the capture itself reports (trace LOST lines)

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
        return "; ".join(parts)


def open_capture(path):
    """Binary stream for a path, ``-`` (stdin) or a .gz file (rotated logs)."""
    if path == "-":
        return sys.stdin.buffer
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise ReplayError("cannot read %s: %s" % (path, exc.strerror))
    if handle.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=handle)
    return handle


def detect_source(head_lines):
    """'audit', 'trace' or None, from the first meaningful lines of a capture."""
    for line in head_lines:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(CAPTURE_HEADER) or stripped.startswith(b"# tracer:"):
            return "trace"
        if stripped.startswith(b"#"):
            continue
        if stripped.startswith(b"type=") or stripped.startswith(b"node="):
            return "audit"
        if b": sys_" in line or b"[LOST " in line or (b": (" in line and b"[0" in line):
            return "trace"
    return None


def parse_capture_header(line):
    """``# mlockaudit-capture: k=v ...`` -> {str: str}."""
    fields = {}
    for token in line[len(CAPTURE_HEADER):].split():
        key, _, value = token.partition(b"=")
        fields[key.decode("ascii", "replace")] = value.decode("utf-8", "replace")
    return fields


def replay(path, emit, source="auto", events=None):
    """Replay one capture; ``emit(event)`` for each call. Returns ReplayStats."""
    stream = open_capture(path)
    try:
        buffered = stream if hasattr(stream, "peek") else io.BufferedReader(stream)
        head = buffered.peek(65536)[:65536].split(b"\n")[:50]
        if source == "auto":
            source = detect_source(head)
            if source is None:
                raise ReplayError(
                    "%s: neither an audit log (type=... msg=audit(...)) nor trace_pipe text; "
                    "use --source audit|trace to force one" % path)
        wanted = frozenset(events) if events else None
        if source == "audit":
            return _replay_audit(buffered, emit, wanted)
        return _replay_trace(buffered, emit, wanted)
    except BrokenPipeError:
        raise
    except (OSError, EOFError) as exc:       # unreadable file, truncated .gz
        raise ReplayError("cannot read %s: %s" % (path, exc))
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _replay_audit(stream, emit, wanted):
    stats = ReplayStats("audit")
    assembler = Assembler(emit, max_pending=4096, wanted=wanted)
    feed = assembler.feed
    lines = 0
    skipped = 0
    for line in stream:
        lines += 1
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
        except ValueError:
            stats.reject("bad value")
    assembler.flush()
    stats.lines = lines
    stats.skipped = skipped
    stats.parsed = lines - skipped - stats.rejected_total
    stats.events = assembler.events
    stats.incomplete = assembler.incomplete
    return stats


def _replay_trace(stream, emit, wanted):
    stats = ReplayStats("trace")
    parser = LineParser()
    header = {}
    first = stream.peek(len(CAPTURE_HEADER))[:len(CAPTURE_HEADER)]
    if first == CAPTURE_HEADER:
        header = parse_capture_header(stream.readline())
        stats.lines += 1
        stats.skipped += 1
    offset = header.get("epoch_offset_ns")
    pairer = Pairer(emit, arch=header.get("arch"), events=wanted,
                    clock_offset_ns=int(offset) if offset else None,
                    hostname=header.get("hostname"))
    feed = pairer.feed
    for record in parser.records(stream):
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
