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

Calls of the surface that the kernel filters (mmap with MAP_LOCKED, shmctl SHM_LOCK, ...:
syscalls.LOCKING) are checked again here, so a capture made with other filters (or none)
reports only the locking ones; their exits cannot be filtered in the kernel, so an exit of
such a call without its entry is a look-alike's and is dropped, never reported as an
incomplete call. ``no_exit``: calls whose exits are not traced (``--mmap-exits none``):
emitted at their entry with the return unknown (``exitTraced: false``).

Kernels without record-tgid (before 4.14, e.g. RHEL 7's 3.10) or a ``(-------)`` tgid
column do not tell the thread group: such calls keep their thread id (the pid column,
``hostThreadId``) and have an unknown process id (null), never a guessed one.
"""

from ..event import MAX_TIMESTAMP_NS, Event, Process, to_signed
from ..syscalls import ARG_SPECS, LOCKING, SYSCALL_NUMBERS, is_locking
from .lines import ENTRY, EXIT, LOST, decode_comm

_NARGS = {name: len(specs) for name, specs in ARG_SPECS.items()}


class Pairer(object):
    """Feed TraceRecords with :meth:`feed`; ``emit(event)`` is called once per call."""

    def __init__(self, emit, arch=None, clock_offset_ns=None, hostname=None,
                 events=None, timeout_ns=10 * 10 ** 9, max_pending=65536, identify=None,
                 own_pid=None, long_bits=64, no_exit=()):
        self._emit = emit
        self.no_exit = frozenset(no_exit)
        # live: record -> (Process, ns tid, thread start), asked at the call's entry (its
        # place in the stream: the thread may be gone by its exit's turn); replay of text
        # captures: None, the columns of the trace line are all there is
        self.identify = identify
        self.own_pid = own_pid        # live: mlockaudit's pid, whose calls are never shown
        # What a record's tgid is compared with: in replay (own_pid None) nothing, so that
        # records with an unknown tgid (None) are not taken for the tracer's own
        self._own_tgid = own_pid if own_pid is not None else -1
        # A syscall tracepoint prints the return as the kernel's unsigned long (``0x%lx``):
        # 64 or 32 bits wide (a 32-bit kernel prints -22 as 0xffffffea); kretprobes with
        # ``$retval:s64`` zero-extend a 32-bit register the same way.
        self.long_bits = long_bits
        self._ret_max = (1 << (long_bits - 1)) - 1
        self.arch = arch
        self.clock_offset_ns = clock_offset_ns
        self.hostname = hostname
        self.wanted = frozenset(events) if events is not None else frozenset(ARG_SPECS)
        self.timeout_ns = timeout_ns
        self.max_pending = max_pending
        self._pending = {}
        self._processes = {}
        self.last_ts = 0
        # counters
        self.events = 0
        self.incomplete = 0
        self.lost = 0            # from inline "CPU:N [LOST M EVENTS]" lines
        self.foreign = 0
        self.lookalikes = 0      # entries of filtered calls that do not lock
        self.unpaired_exits = 0  # exits of filtered calls without their entry

    def set_emit(self, emit):
        self._emit = emit

    def feed(self, record):
        kind = record.kind
        if kind == LOST:
            self.lost += record.lost
            return
        if record.name not in self.wanted or record.tgid == self._own_tgid:
            self.foreign += 1                # (a tracer never reports itself)
            return
        self.last_ts = record.ts_ns
        pending = self._pending
        if kind == ENTRY:
            previous = pending.pop(record.tid, None)
            if previous is not None:
                self._done(previous[0], None, previous[1])
            if record.name in LOCKING and not is_locking(record.name, record.args,
                                                         record.arch or self.arch):
                self.lookalikes += 1
                return
            who = self.identify(record) if self.identify is not None else None
            if who is not None and who[0].pid == self.own_pid and who[0].pid is not None:
                self.foreign += 1
                return
            if record.name in self.no_exit:
                self._done(record, None, who, exit_traced=False)
                return
            pending[record.tid] = (record, who)
            if len(pending) > self.max_pending:
                key = next(iter(pending))
                self._done(*pending.pop(key))
        elif kind == EXIT:
            entry = pending.pop(record.tid, None)
            if entry is not None and entry[0].name == record.name:
                self._done(entry[0], record, entry[1])
            else:
                if entry is not None:
                    self._done(entry[0], None, entry[1])
                if record.name in LOCKING:           # a look-alike's exit (see the doc)
                    self.unpaired_exits += 1
                    return
                who = self.identify(record) if self.identify is not None else None
                if who is not None and who[0].pid == self.own_pid and who[0].pid is not None:
                    self.foreign += 1
                    return
                self._done(None, record, who)

    def _done(self, entry, exit_record, who=None, exit_traced=True):
        """Build and emit the event for an entry and/or exit record (one may be None);
        ``who``: what identify said at the call; ``exit_traced`` False: no exit was asked
        for (the return is unknown by choice, not lost)."""
        first = entry if entry is not None else exit_record
        complete = (entry is not None and exit_record is not None) or not exit_traced
        name = first.name
        nargs = _NARGS[name]
        if entry is not None and len(entry.args) == nargs:
            args = entry.args
        elif entry is not None:              # a probe that fetched fewer arguments
            args = (entry.args + (None,) * nargs)[:nargs]
        else:
            args = (None,) * nargs
        ret = exit_record.ret if exit_record is not None else None
        if ret is not None and ret > self._ret_max:         # printed as an unsigned long
            ret = to_signed(ret, self.long_bits)
        extra = None
        if self.clock_offset_ns is not None:
            timestamp = first.ts_ns + self.clock_offset_ns
            if not 0 <= timestamp <= MAX_TIMESTAMP_NS:       # no wall clock can say so
                timestamp = None
                extra = {"traceClockNs": first.ts_ns}
        else:
            timestamp = None
            extra = {"traceClockNs": first.ts_ns}
        if not complete:
            extra = extra or {}
            extra["incomplete"] = True
            self.incomplete += 1
        if not exit_traced:
            extra = extra or {}
            extra["exitTraced"] = False
        self.events += 1
        arch = first.arch or self.arch
        numbers = SYSCALL_NUMBERS.get(arch)
        if who is not None:
            process, ns_tid, thread_start = who
        else:
            ns_tid = thread_start = None
            comm_field = first.comm_field
            if exit_record is not None and (comm_field or b"").endswith(b"<...>"):
                comm_field = exit_record.comm_field          # unknown at entry
            tgid = first.tgid
            if tgid is None and exit_record is not None:
                tgid = exit_record.tgid
            process = self._processes.get((tgid, comm_field))
            if process is None:
                process = self.process(tgid, comm_field)
        self._emit(Event(name, "tracefs", process, timestamp, arch,
                         numbers.get(name) if numbers else None, first.tid, ns_tid, first.cpu,
                         args, ret, extra, first.probe, thread_start))

    def process(self, tgid, comm_field):
        """The Process for what a trace line tells: tgid and comm. Cached, bounded at 4096
        identities (cleared when full: a miss costs one small object)."""
        key = (tgid, comm_field)
        process = self._processes.get(key)
        if process is None:
            if len(self._processes) >= 4096:
                self._processes.clear()
            process = self._processes[key] = Process(pid=tgid, comm=decode_comm(comm_field),
                                                     hostname=self.hostname)
        return process

    def expire(self, now_ts_ns=None):
        """Emit entries older than ``timeout_ns`` of trace time (default: the newest seen)."""
        limit = (self.last_ts if now_ts_ns is None else now_ts_ns) - self.timeout_ns
        for tid in [tid for tid, (rec, _) in self._pending.items() if rec.ts_ns < limit]:
            entry, who = self._pending.pop(tid)
            self._done(entry, None, who)

    def flush(self):
        pending = self._pending
        while pending:
            entry, who = pending.pop(next(iter(pending)))
            self._done(entry, None, who)

    @property
    def in_flight(self):
        return len(self._pending)
