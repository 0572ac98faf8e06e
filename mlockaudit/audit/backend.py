"""The audit backend (``start --backend audit``): install the rules, read records, assemble
calls, undo on stop. A Source (source.py).

Read modes, chosen from what the kernel reports (AUDIT_GET) and reported by ``doctor``:

* ``unicast``: no audit daemon registered (pid 0, or a pid that is dead). mlockaudit
  becomes the audit daemon. Records then do not go to the kernel log, and when the reader
  falls behind the kernel makes callers wait (backlog_limit, backlog_wait_time) instead of
  dropping: a 100,000-call storm is delivered whole (tests/live/test_live_audit.py).
* ``multicast``: another daemon (auditd) is registered and the kernel is 3.16 or newer:
  read the AUDIT_NLGRP_READLOG group beside it without disturbing it. A slow multicast
  reader loses records (recv fails with ENOBUFS); that is counted, and the events it cost
  are counted from the gaps in the serial numbers.
* ``input``: an older kernel with auditd: read auditd's own text (``--input -`` as an
  auditd plugin on stdin, or ``--input /var/log/audit/audit.log``, following rotation).

Loss, from every source we can observe: the kernel's ``lost`` counter (delta since
start), serial gaps (multicast, input), ENOBUFS occurrences, datagrams cut by the socket
(never seen: the slot is larger than any audit message).

What /proc adds (enrich.LiveDetails): a record says who the process was at the call;
while the process lives, /proc adds the pids inside its pid namespace, its container,
namespaces, cgroup and start times. A process gone by then gets null there.
"""

import errno
import os
import time

from .. import host, procfs
from ..enrich import LiveDetails
from ..source import Source
from . import rules as audit_rules
from .assembler import Assembler
from .gaps import SerialGaps
from .lifecycle import AuditSetup, dead_daemon_pid
from .netlink import AuditControl, AuditError, BatchReceiver, DatagramFeeder, RecordSocket
from .records import DATAGRAM_SYSCALL, RecordError, parse_log_line
from .textinput import LogFollower, StreamInput

#: AUDIT_NLGRP_READLOG arrived in 3.16. CentOS 7's 3.10 accepts the bind but delivers
#: nothing, so the decision is made on the version, never on the bind result.
MULTICAST_SINCE = (3, 16)
BACKLOG_LIMIT = 8192
STATUS_POLL_SECONDS = 2.0


def _from_auditd(rtype):
    """auditd's own records (DAEMON_START, DAEMON_ROTATE...: types 1200-1299) carry
    auditd's serials, not the kernel's: they say nothing about kernel loss."""
    if rtype.__class__ is int:
        return 1200 <= rtype < 1300
    return rtype.startswith(b"DAEMON_")


def choose_mode(status, input_path=None, release=None, alive=procfs.process_alive):
    """(mode, why) from AUDIT_GET's status. See the module docstring."""
    if input_path is not None:
        return "input", "reading auditd's text from %s" % input_path
    pid = status["pid"]
    if pid == 0:
        return "unicast", "no audit daemon registered: mlockaudit becomes the audit daemon"
    if not alive(pid):
        return "unicast", ("the registered audit daemon (pid %d) is gone: mlockaudit takes "
                           "its place" % pid)
    version = host.kernel_version(release)
    if version >= MULTICAST_SINCE:
        return "multicast", ("an audit daemon (pid %d) is registered: reading the multicast "
                             "group beside it (kernel >= 3.16)" % pid)
    return None, ("an audit daemon (pid %d) owns audit and this kernel (%d.%d) has no "
                  "multicast group: run mlockaudit as an auditd plugin (--input -, see "
                  "rules/au-mlockaudit.conf) or follow its log (--input "
                  "/var/log/audit/audit.log)" % ((pid,) + version))


class AuditSource(Source):
    name = "audit"

    def __init__(self, emit, session, options=None):
        Source.__init__(self, emit, session, options)
        self.events = self.options.events
        self.hostname = self.options.hostname
        self.input_path = self.options.input_path
        self.mode = None
        self.why = None
        self.control = None
        self.reader = None
        self.text = None
        self.batch = None
        self.setup_state = None
        self.details = None
        self.assembler = Assembler(emit, hostname=self.hostname, wanted=self.events,
                                   clock=time.monotonic())
        self.gaps = SerialGaps()
        self.feeder = DatagramFeeder(self.assembler, DATAGRAM_SYSCALL)
        self.enobufs = 0
        self.unread_at_stop = 0         # records the kernel still held when stop gave up
        self.records = 0
        self.lost_at_start = None
        self.kernel_lost = 0
        self.enabled_by_us = False
        self.rule_texts = []
        self._last_status = 0.0

    # -- setup ------------------------------------------------------------------------

    def setup(self):
        """Install rules and start reading. Returns a one-line description for ``ready``."""
        self.control = AuditControl()
        status = self.control.status()
        self.lost_at_start = status["lost"]
        self.mode, self.why = choose_mode(status, self.input_path)
        if self.mode is None:
            raise AuditError(errno.EBUSY, self.why)
        setup = self.setup_state = AuditSetup(self.control, self.session)
        if self.mode == "unicast":
            stale = dead_daemon_pid(self.control)
            if stale:
                self.log("audit pid %d points at a dead process: replacing it" % stale)
        arch = host.native_arch()
        if arch is None:
            raise AuditError(errno.ENOTSUP, "unsupported machine %s" % host.machine())
        family, notes = audit_rules.family_rules(arch, self.events)
        for note in notes:
            self.log("rules: " + note)
        if not family:
            raise AuditError(errno.ENOSYS, "no call of the family exists on this kernel")
        if self.mode == "unicast":
            self.reader = RecordSocket(multicast=False)
            setup.register(self.reader, os.getpid())
            setup.raise_backlog(BACKLOG_LIMIT)
        elif self.mode == "multicast":
            self.reader = RecordSocket(multicast=True)
            self.feeder.see = self.gaps.see
        else:                                     # input: auditd's text, see textinput
            self.text = (StreamInput(0) if self.input_path == "-"
                         else LogFollower(self.input_path))
        if self.mode != "input":                  # live records: /proc adds what it knows
            self.details = LiveDetails()
            self.assembler.set_enrich(self.details)
        all_rules = [audit_rules.self_rule(os.getpid())] + family
        setup.install_rules(all_rules)
        self.rule_texts = [rule.to_text() for rule in all_rules]
        self.enabled_by_us = setup.enable()
        if self.enabled_by_us:
            self.log("WARNING: audit was disabled; mlockaudit enabled it. Processes that "
                     "were already running when audit was first enabled since boot are NOT "
                     "audited until they fork or exec (their audit context is made at fork). "
                     "Boot with audit=1 to close this gap; audit goes back to disabled at stop.")
        for note in setup.notes:
            self.log(note)
        if self.reader is not None:
            self.reader.sock.setblocking(False)
            self.batch = BatchReceiver(self.reader.fileno())
        return "backend=audit mode=%s (%s); rules: %s" % (
            self.mode, self.why, "; ".join(self.rule_texts))

    def set_emit(self, emit):
        self.emit = emit
        self.assembler.set_emit(emit)

    # -- reading -----------------------------------------------------------------------

    def fileno(self):
        if self.text is not None:
            return self.text.fileno()
        return self.reader.fileno() if self.reader is not None else None

    @property
    def finished(self):
        """True when the input ended (auditd stopped its plugin): time to stop."""
        return self.text is not None and self.text.finished

    def pump_text(self):
        """auditd's text lines (plugin stdin or followed log) -> records. A line that is
        not a record is counted by reason and changes nothing (records are checked when
        fed, see assembler): no line can end the run."""
        feed = self.assembler.feed
        see = self.gaps.see
        count = 0
        for line in self.text.read_lines():
            if not line.strip():
                continue
            count += 1
            try:
                rtype, stamp, body, node = parse_log_line(line)
                if node is None and not _from_auditd(rtype):
                    see(int(stamp[stamp.find(b":") + 1:]))
                feed(rtype, stamp, body, node)
            except RecordError as exc:
                self.feeder.reject(exc.reason)
            except ValueError:                        # (values are checked: a spare)
                self.feeder.reject("bad value")
        self.records += count
        return count

    def pump(self):
        """Every record waiting on the socket, up to ``MAX_BATCHES`` recvmmsg calls (the
        bound per pump; ``busy`` says whether more was waiting). Returns how many."""
        if self.text is not None:
            return self.pump_text()
        receive = self.batch.receive
        feed = self.feeder.feed
        count = 0
        busy = True
        for _ in range(self.MAX_BATCHES):
            try:
                batch = receive()
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:        # multicast reader fell behind
                    self.enobufs += 1
                    continue
                raise
            if not batch:
                busy = False
                break
            count += len(batch)
            feed(batch)
        self.busy = busy
        self.records += count
        return count

    #: recvmmsg calls per pump (256 records each): about 20k calls' records.
    MAX_BATCHES = 256

    def tick(self, now):
        """Periodic work (about every 200 ms): expire, poll the kernel's lost counter."""
        self.assembler.expire(now)
        if now - self._last_status >= STATUS_POLL_SECONDS:
            self._last_status = now
            self._poll_lost()

    def _poll_lost(self):
        try:
            status = self.control.status()
        except (AuditError, OSError):
            return
        self.kernel_lost = max(0, status["lost"] - self.lost_at_start)

    # -- stop --------------------------------------------------------------------------

    def stop(self):
        """Remove the rules, read what is still queued, release the kernel. Returns a list
        of problems (empty when the host is as it was)."""
        problems = []
        if self.setup_state is None:
            if self.control is not None:
                self.control.close()
            return problems
        problems += self.setup_state.remove_rules()
        if self.reader is not None or self.text is not None:
            self._drain()
        self.assembler.flush()
        self._poll_lost()
        self.gaps.settle(final=True)
        problems += self.setup_state.release(self.reader if self.mode == "unicast" else None)
        if self.reader is not None:
            self.reader.close()
        if self.text is not None:
            self.text.close()
        self.control.close()
        return problems

    #: How long stop waits for what the kernel still queues for us (a storm's backlog of
    #: 8192 records reads in well under a second on an idle host; a starved reader needs more).
    DRAIN_SECONDS = 10.0

    def _drain(self):
        """Read until the socket is empty and, as the audit daemon, the kernel's backlog too
        (the rules are gone: nothing new comes). What the kernel still holds at the deadline
        would go to the kernel log once we unregister: counted in ``unread_at_stop``."""
        deadline = time.monotonic() + self.DRAIN_SECONDS
        quiet_since = time.monotonic()
        unicast = self.mode == "unicast" and self.reader is not None
        while time.monotonic() < deadline:
            if self.pump():
                quiet_since = time.monotonic()
                continue
            if unicast:
                backlog = self._backlog()
                if backlog:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= 0.1:
                    return
            elif time.monotonic() - quiet_since >= 0.3:
                return
            time.sleep(0.02)
        if unicast:
            self.unread_at_stop = self._backlog() or 0

    def _backlog(self):
        try:
            return self.control.status()["backlog"]
        except (AuditError, OSError, KeyError):
            return None

    def stats(self):
        lost = self.kernel_lost + (self.gaps.lost if self.mode in ("multicast", "input") else 0)
        lost += self.unread_at_stop
        truncated = self.batch.truncated if self.batch is not None else 0
        stats = {"backend": "audit", "mode": self.mode, "events": self.assembler.events,
                 "lost": lost + truncated, "kernel_lost": self.kernel_lost,
                 "serial_gaps": self.gaps.lost, "enobufs": self.enobufs,
                 "truncated": truncated, "unread_at_stop": self.unread_at_stop,
                 "incomplete": self.assembler.incomplete,
                 "records": self.records, "rejected": self.feeder.rejected,
                 "foreign": self.assembler.foreign, "orphans": self.assembler.orphans,
                 "in_flight": self.assembler.in_flight,
                 "rotations": getattr(self.text, "rotations", 0)}
        if self.details is not None:
            stats["proc_gone"] = self.details.cache.gone
        return stats
