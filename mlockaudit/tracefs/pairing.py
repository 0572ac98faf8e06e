"""Trace records -> calls: pairs each entry with the exit of the same thread.

A thread is inside at most one syscall at a time, so pending entries are keyed by thread id
alone. When the pair is broken, the call is still reported, marked ``incomplete``, with
what is known and ``null`` for the rest, never a guess:

* a new entry on a thread whose previous entry never saw its exit (the exit was lost
  in the ring buffer): the old call is emitted without a return value;
* an exit without an entry (lost, or the call started before tracing): emitted with the
  arguments unknown;
* an entry whose exit never comes (a thread killed inside mlockall): emitted after
  ``timeout_ns`` of trace time, or at end of input; live sources call :meth:`expire`.

The table is bounded (``max_pending``; the oldest entry goes first).
"""

from ..event import Event, to_signed64
from ..syscalls import ARG_SPECS, SYSCALL_NUMBERS
from .lines import ENTRY, EXIT, LOST

# Tracee's argument name -> names a trace line may use for it.
_ARG_ALIASES = {"addr": ("start", "addr"), "len": ("len",), "flags": ("flags",)}


class Pairer(object):
    """Feed TraceRecords with :meth:`feed`; ``emit(event)`` is called once per call."""

    def __init__(self, emit, arch=None, clock_offset_ns=None, hostname=None,
                 events=None, timeout_ns=10 * 10 ** 9, max_pending=65536):
        self._emit = emit
        self.arch = arch
        self.clock_offset_ns = clock_offset_ns
        self.hostname = hostname
        self.wanted = frozenset(events) if events is not None else frozenset(ARG_SPECS)
        self.timeout_ns = timeout_ns
        self.max_pending = max_pending
        self._pending = {}
        self.last_ts = 0
        # counters
        self.events = 0
        self.incomplete = 0
        self.lost = 0            # from inline "CPU:N [LOST M EVENTS]" lines
        self.foreign = 0

    def feed(self, record):
        kind = record.kind
        if kind == LOST:
            self.lost += record.lost
            return
        if record.name not in self.wanted:
            self.foreign += 1
            return
        self.last_ts = record.ts_ns
        pending = self._pending
        if kind == ENTRY:
            previous = pending.pop(record.tid, None)
            if previous is not None:
                self._done(previous, None)
            pending[record.tid] = record
            if len(pending) > self.max_pending:
                key = next(iter(pending))
                self._done(pending.pop(key), None)
        elif kind == EXIT:
            entry = pending.pop(record.tid, None)
            if entry is not None and entry.name == record.name:
                self._done(entry, record)
            else:
                if entry is not None:
                    self._done(entry, None)
                self._done(None, record)

    def _done(self, entry, exit_record):
        """Build and emit the event for an entry and/or exit record (one may be None)."""
        first = entry if entry is not None else exit_record
        complete = entry is not None and exit_record is not None
        name = first.name
        if entry is not None:
            values = entry.values
            args = tuple(_arg(values, arg_name) for arg_name, _ in ARG_SPECS[name])
        else:
            args = tuple(None for _ in ARG_SPECS[name])
        comm = first.comm
        if comm is None and exit_record is not None:
            comm = exit_record.comm
        tgid = first.tgid
        if tgid is None and exit_record is not None:
            tgid = exit_record.tgid
        ret = None
        if exit_record is not None and exit_record.ret is not None:
            ret = to_signed64(exit_record.ret)
        extra = {"probe": first.probe}
        timestamp = None
        if self.clock_offset_ns is not None:
            timestamp = first.ts_ns + self.clock_offset_ns
        else:
            extra["traceClockNs"] = first.ts_ns
        if not complete:
            extra["incomplete"] = True
            self.incomplete += 1
        self.events += 1
        arch = first.arch or self.arch
        self._emit(Event(
            name, "tracefs",
            timestamp=timestamp,
            arch=arch,
            syscall_nr=SYSCALL_NUMBERS[arch].get(name) if arch in SYSCALL_NUMBERS else None,
            pid=tgid,
            tid=first.tid,
            cpu=first.cpu,
            comm=comm,
            args=args,
            ret=ret,
            hostname=self.hostname,
            extra=extra,
        ))

    def expire(self, now_ts_ns=None):
        """Emit entries older than ``timeout_ns`` of trace time (default: the newest seen)."""
        limit = (self.last_ts if now_ts_ns is None else now_ts_ns) - self.timeout_ns
        for tid in [tid for tid, rec in self._pending.items() if rec.ts_ns < limit]:
            self._done(self._pending.pop(tid), None)

    def flush(self):
        pending = self._pending
        while pending:
            self._done(pending.pop(next(iter(pending))), None)

    @property
    def in_flight(self):
        return len(self._pending)


def _arg(values, arg_name):
    for alias in _ARG_ALIASES[arg_name]:
        value = values.get(alias)
        if value is not None:
            return value & 0xFFFFFFFFFFFFFFFF
    return None
