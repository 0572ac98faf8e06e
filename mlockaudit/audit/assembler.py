"""Audit records -> calls. Groups the records of one event by their stamp and hands each
completed mlock-family call to ``emit`` as an :class:`~mlockaudit.event.Event`.

What completes an event, and why:

* ``EOE`` is the kernel's "end of event" (audit_log_exit sends it last).
* ``PROCTITLE`` is the last record *before* EOE of every syscall event, so a SYSCALL that
  already has its PROCTITLE is complete; this lets logs written without EOE records
  (auditd's own log often lacks them) finish events without waiting.
* Otherwise an entry completes when it grows older than ``timeout`` (live sources call
  :meth:`Assembler.expire`), when more than ``max_pending`` entries are in flight (the
  oldest goes first: memory stays bounded under a storm), or at end of input.

Records of other syscalls are recognised from the ``syscall=`` number (one regex match,
no field parse), and their follow-up records are dropped by stamp, so a busy foreign rule
set costs little. Records may arrive out of order (a PROCTITLE before its SYSCALL): they wait for
their SYSCALL in the same table, under the same bounds.

A record is checked when it is fed (records.split_syscall, records.parse_stamp): a bad one
raises RecordError there, for that record, and changes nothing, so that whatever is
counted as an event is built and emitted, later records are never blamed for an earlier
one, and flush() and expire() cannot fail.
"""

from . import events, records
from .events import EventBuilder
from .. import syscalls

_FAMILY_NUMBERS = frozenset([nr for table in syscalls.SYSCALL_NUMBERS.values()
                             for nr in table.values()] + list(syscalls.IPC_NUMBERS.values()))
_FILTERED = frozenset(syscalls.LOCKING)
_FAMILY_NUMBER_BYTES = frozenset(str(nr).encode() for nr in _FAMILY_NUMBERS)


class _Entry(object):
    """An mlock-family event in flight (or records that arrived before their SYSCALL)."""

    __slots__ = ("head", "tail", "name", "arch", "number", "proctitle", "node", "ended",
                 "born", "timestamp", "serial")

    def __init__(self, born, head=None, tail=None, call=(None, None, None), node=None,
                 stamp=(None, None)):
        self.head = head
        self.tail = tail
        self.name, self.arch, self.number = call
        self.timestamp, self.serial = stamp
        self.proctitle = None
        self.node = node
        self.ended = False
        self.born = born


class _Foreign(object):
    """The stamp of an event of another syscall: its later records are dropped by it."""

    __slots__ = ("born",)

    def __init__(self, born):
        self.born = born


class Assembler(object):
    """Feed it records with :meth:`feed`; it calls ``emit(event)`` once per family call."""

    def __init__(self, emit, hostname=None, max_pending=8192, timeout=2.0, clock=0.0,
                 wanted=None):
        self._emit = emit
        self._wanted = frozenset(wanted) if wanted else frozenset(syscalls.SURFACE)
        # (arch bytes, syscall bytes) -> (name, arch name, number); bounded below (64:
        # a handful of arches times ten calls)
        self._calls = {}
        self._builder = EventBuilder(hostname)
        # key -> entry; read-only outside this class; bounded by max_pending (evicted
        # oldest first, see _evict)
        self._pending = self.pending = {}
        self.max_pending = max_pending
        self.timeout = timeout
        self._clock = clock
        # counters, read by the caller's statistics
        self.events = 0
        self._incomplete = 0         # emitted on timeout/eviction/flush, before EOE
        self.orphans = 0             # records whose SYSCALL never came
        self.foreign = 0             # SYSCALL records of other syscalls
        self.collisions = 0          # foreign SYSCALLs with the stamp of a pending call

    @property
    def incomplete(self):
        """Calls emitted incomplete: before their EOE, or from records cut short."""
        return self._incomplete + self._builder.incomplete

    def set_emit(self, emit):
        self._emit = emit

    def set_enrich(self, enrich):
        """``enrich(process, timestamp) -> process``: what /proc adds, live only."""
        self._builder.enrich = enrich

    def feed(self, rtype, stamp, body, node=None):
        """One record. ``stamp`` is the ``SEC.MS:SERIAL`` bytes that identify its event;
        ``node`` the ``node=`` name of a log line (None for this host)."""
        key = stamp if node is None else node + b"@" + stamp
        if rtype == records.SYSCALL:
            head, tail = records.split_syscall(body)
            self.syscall(key, stamp, head, tail, node)
        elif rtype == records.PROCTITLE:
            value = body[10:] if body[:10] == b"proctitle=" else _proctitle_value(body)
            if value is None:
                raise records.RecordError("PROCTITLE without proctitle=")
            self.proctitle(key, stamp, value)
        elif rtype == records.EOE:
            self.end(key, stamp)

    # The three record kinds that matter, as separate entry points: the live netlink
    # reader parses datagrams itself and calls these directly.

    def syscall(self, key, stamp, head, tail, node=None):
        """A SYSCALL record, split by records.split_syscall (whose head values are
        checked). Raises RecordError, changing nothing, for a bad stamp."""
        call = self._calls.get((head[0], head[1]))
        if call is None:
            call = self._call_slow(head)
            if call is None:                     # another syscall, arch, or not selected
                self.foreign += 1
                self._ignore(key)
                return
        if call[0] in _FILTERED and not events.head_is_locking(call, head):
            # a look-alike (plain mmap, IPC_STAT, another rlimit) that another rule set
            # let through: the same predicate as our kernel-side rule fields
            self.foreign += 1
            self._ignore(key)
            return
        parsed_stamp = records.parse_stamp(stamp)      # (checked before anything changes)
        pending = self._pending
        entry = pending.get(key)
        if entry is None or entry.__class__ is not _Entry:     # the usual case
            pending[key] = _Entry(self._clock, head, tail, call, node, parsed_stamp)
            if len(pending) > self.max_pending:
                self._evict()
            return
        if entry.head is not None:
            raise records.RecordError("second SYSCALL record for one event")
        entry.head = head                        # its PROCTITLE or EOE came first
        entry.tail = tail
        entry.name, entry.arch, entry.number = call
        entry.timestamp, entry.serial = parsed_stamp
        entry.node = node
        if entry.ended or entry.proctitle is not None:
            del pending[key]
            self._complete(entry, True)

    def proctitle(self, key, stamp, value):
        """A PROCTITLE record's raw ``proctitle=`` value: the last record before EOE."""
        pending = self._pending
        entry = pending.get(key)
        if entry is None:
            self._early(key).proctitle = value
        elif entry.__class__ is not _Entry:      # foreign event: PROCTITLE is its last
            del pending[key]
        else:
            entry.proctitle = value
            if entry.head is not None:
                del pending[key]
                self.events += 1
                self._emit(self._builder.build(entry, True))

    def end(self, key, stamp):
        """An EOE record."""
        pending = self._pending
        entry = pending.pop(key, None)
        if entry is None or entry.__class__ is not _Entry:
            return
        if entry.head is not None:
            self._complete(entry, True)
        else:                                    # EOE before its SYSCALL: wait for it
            entry.ended = True
            pending[key] = entry

    def _call_slow(self, head):
        """(name, arch) for a SYSCALL head the memo does not know, or None if foreign.
        The memo is keyed by the raw arch and syscall bytes (a handful of values, checked
        by split_syscall)."""
        if head[1] not in _FAMILY_NUMBER_BYTES:
            return None
        arch = int(head[0], 16)
        name = syscalls.BY_AUDIT_NUMBER.get((arch, int(head[1])))
        if name not in self._wanted:
            return None
        call = (name, syscalls.AUDIT_ARCH.get(arch), int(head[1]))
        if len(self._calls) < 64:
            self._calls[(head[0], head[1])] = call
        return call

    def _ignore(self, key):
        """Remember a foreign event's stamp (with the clock, for expiry) to drop its records.

        A stamp identifies an event within one host's boot only: logs merged from several
        hosts without ``node=`` can hold a foreign SYSCALL with the stamp of a pending
        family call. That call stays (it is another event; the collision is counted); only
        records that came before any SYSCALL are taken as the foreign event's."""
        pending = self._pending
        entry = pending.get(key)
        if entry is not None:
            if entry.__class__ is not _Entry:    # already known as foreign
                return
            if entry.head is not None:
                self.collisions += 1             # a family call's stamp: keep the call
                return
            del pending[key]                     # early records of a foreign event
            return
        pending[key] = _Foreign(self._clock)
        if len(pending) > self.max_pending:
            self._evict()

    def _early(self, key):
        entry = _Entry(self._clock)
        self._pending[key] = entry
        if len(self._pending) > self.max_pending:
            self._evict()
        return entry

    def _complete(self, entry, complete):
        if not complete:
            self._incomplete += 1
        self.events += 1
        self._emit(self._builder.build(entry, complete))

    def _finish(self, key, entry):
        if entry.__class__ is not _Entry:
            return
        if entry.head is None:
            self.orphans += 1
            return
        self._complete(entry, complete=False)

    def _evict(self):
        """Complete the oldest entry: the table never holds more than max_pending."""
        key = next(iter(self._pending))
        self._finish(key, self._pending.pop(key))

    def expire(self, now):
        """Complete entries older than ``timeout`` (same clock as ``now``, e.g. monotonic).

        Entries remember the clock of the previous expire() call, so the per-record path
        never reads the time.
        """
        limit = now - self.timeout
        pending = self._pending
        while pending:
            key = next(iter(pending))
            entry = pending[key]
            if entry.born > limit:
                break
            del pending[key]
            self._finish(key, entry)
        self._clock = now

    def flush(self):
        """End of input: complete everything still in flight."""
        pending = self._pending
        while pending:
            key = next(iter(pending))
            self._finish(key, pending.pop(key))

    @property
    def in_flight(self):
        return len(self._pending)


def _proctitle_value(body):
    return body[10:] if body.startswith(b"proctitle=") else records.parse_fields(body).get(
        b"proctitle")
