"""The live audit backend: install the rules, read records, assemble calls, undo on stop.

Read modes, chosen from what the kernel reports (AUDIT_GET) and reported by ``doctor``:

* ``unicast``: no audit daemon registered (pid 0, or a pid that is dead). mlockaudit
  becomes the audit daemon. Records then do not go to the kernel log, and when the reader
  falls behind the kernel makes callers wait (backlog_limit, backlog_wait_time) instead of
  dropping: a 100,000-call storm is delivered whole (tests/test_live_audit.py).
* ``multicast``: another daemon (auditd) is registered and the kernel is 3.16 or newer:
  read the AUDIT_NLGRP_READLOG group beside it without disturbing it. A slow multicast
  reader loses records (recv fails with ENOBUFS); that is counted, and the events it cost
  are counted from the gaps in the serial numbers.
* ``input``: an older kernel with auditd: read auditd's own text (``--input -`` as an
  auditd plugin on stdin, or ``--input /var/log/audit/audit.log``, following rotation).

Loss, from every source we can observe: the kernel's ``lost`` counter (delta since
start), serial gaps (multicast), ENOBUFS occurrences; reported in ``stats()`` and in the
final ``events=N lost=M`` line.
"""

import errno
import os
import time

from .. import loop, procfs
from .assembler import Assembler
from .lifecycle import AuditSetup, dead_daemon_pid
from .netlink import AuditControl, AuditError, BatchReceiver, RecordSocket, split_datagram
from .records import DATAGRAM_SYSCALL, RecordError, parse_log_line
from .textinput import LogFollower, StreamInput
from . import rules as audit_rules

def _from_auditd(rtype):
    """auditd's own records (DAEMON_START, DAEMON_ROTATE...: types 1200-1299) carry
    auditd's serials, not the kernel's: they say nothing about kernel loss."""
    if rtype.__class__ is int:
        return 1200 <= rtype < 1300
    return rtype.startswith(b"DAEMON_")


_SYSCALL_TYPE, _PROCTITLE_TYPE, _EOE_TYPE = b"\x14\x05", b"\x2f\x05", b"\x28\x05"  # 1300..

#: AUDIT_NLGRP_READLOG arrived in 3.16. CentOS 7's 3.10 accepts the bind but delivers
#: nothing, so the decision is made on the version, never on the bind result.
MULTICAST_SINCE = (3, 16)
BACKLOG_LIMIT = 8192
STATUS_POLL_SECONDS = 2.0


class SerialGaps(object):
    """Counts audit events that never arrived, from gaps in the serial numbers.

    Serials are handed out per event, in order, but records of different CPUs may arrive
    a little out of order; a serial missing from the last ``window`` serials may still
    come, so it only counts once it has fallen out of the window."""

    def __init__(self, window=4096):
        self.window = window
        self.highest = None
        self.missing = set()
        self.lost = 0

    def see(self, serial):
        highest = self.highest
        if highest is None or serial == highest + 1:
            self.highest = serial
        elif serial > highest:
            start = highest + 1
            if serial - start > self.window:
                self.lost += serial - start - self.window
                start = serial - self.window
            self.missing.update(range(start, serial))
            self.highest = serial
            if len(self.missing) > 4 * self.window:
                self.settle()
        elif serial != highest and self.missing:
            self.missing.discard(serial)

    def settle(self, final=False):
        """Count the missing serials that can no longer arrive (all of them if final)."""
        if not self.missing:
            return
        limit = self.highest - (0 if final else self.window)
        gone = [serial for serial in self.missing if serial <= limit]
        self.lost += len(gone)
        self.missing.difference_update(gone)


def kernel_version():
    return audit_rules.kernel_release_tuple()


def choose_mode(status, input_path=None, release=None):
    """(mode, why) from AUDIT_GET's status. See the module docstring."""
    if input_path is not None:
        return "input", "reading auditd's text from %s" % input_path
    pid = status["pid"]
    if pid == 0:
        return "unicast", "no audit daemon registered: mlockaudit becomes the audit daemon"
    if not procfs.process_alive(pid):
        return "unicast", ("the registered audit daemon (pid %d) is gone: mlockaudit takes "
                           "its place" % pid)
    version = audit_rules.kernel_release_tuple(release)
    if version >= MULTICAST_SINCE:
        return "multicast", ("an audit daemon (pid %d) is registered: reading the multicast "
                             "group beside it (kernel >= 3.16)" % pid)
    return None, ("an audit daemon (pid %d) owns audit and this kernel (%d.%d) has no "
                  "multicast group: run mlockaudit as an auditd plugin (--input -, see "
                  "rules/au-mlockaudit.conf) or follow its log (--input "
                  "/var/log/audit/audit.log)" % ((pid,) + version))


class AuditBackend(object):
    """``start --backend audit``: setup(), run(should_stop), stop(), stats()."""

    name = "audit"

    def __init__(self, emit, session, events=None, hostname=None, log=None,
                 input_path=None):
        self.emit = emit
        self.session = session
        self.events = events
        self.hostname = hostname
        self.log = log or (lambda message: None)
        self.input_path = input_path
        self.mode = None
        self.why = None
        self.control = None
        self.reader = None
        self.text = None
        self.batch = None
        self.setup_state = None
        self.assembler = Assembler(emit, hostname=hostname, wanted=events,
                                   clock=time.monotonic())
        self.gaps = SerialGaps()
        self.enobufs = 0
        self.records = 0
        self.rejected = 0
        self.rejected_reasons = {}    # reason label -> records (text input)
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
        family, notes = audit_rules.family_rules(_native_arch(), self.events)
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
        else:                                     # input: auditd's text, see textinput
            self.text = (StreamInput(0) if self.input_path == "-"
                         else LogFollower(self.input_path))
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
        """Send the next events elsewhere (SIGHUP reload); no cost per event."""
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
                self._rejected(exc.reason)
            except ValueError:                        # (values are checked: a spare)
                self._rejected("bad value")
        self.records += count
        return count

    def _rejected(self, reason):
        self.rejected += 1
        reasons = self.rejected_reasons
        if reason in reasons or len(reasons) < 64:    # (fixed labels; bounded anyway)
            reasons[reason] = reasons.get(reason, 0) + 1

    def pump(self):
        """Read every record waiting on the socket. Returns how many were read."""
        if self.text is not None:
            return self.pump_text()
        receive = self.batch.receive
        assembler = self.assembler
        feed, syscall, proctitle = assembler.feed, assembler.syscall, assembler.proctitle
        pending = assembler.pending
        match_syscall = DATAGRAM_SYSCALL.match
        see = self.gaps.see if self.mode == "multicast" else None
        count = 0
        while True:
            try:
                batch = receive()
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:        # multicast reader fell behind
                    self.enobufs += 1
                    continue
                raise
            if not batch:
                break
            count += len(batch)
            for data in batch:
                kind = data[4:6]                     # message type, little-endian u16
                try:
                    if see is None:
                        # Fast paths for the three records of every call (unicast: the
                        # serial is not needed). Anything unusual takes the generic path.
                        if kind == _SYSCALL_TYPE:
                            match = match_syscall(data, 16)
                            if match is not None:
                                groups = match.groups()
                                syscall(groups[0], groups[0], groups[1:], data[match.end():])
                                continue
                        elif kind == _PROCTITLE_TYPE:
                            close = data.find(b"): proctitle=", 22)
                            if close > 0:
                                stamp = data[22:close]
                                proctitle(stamp, stamp, data[close + 13:])
                                continue
                        elif kind == _EOE_TYPE and not pending:
                            # ends an event its PROCTITLE already completed: nothing to do
                            continue
                    record = split_datagram(data)
                    if record is None:
                        continue
                    rtype, stamp, body = record
                    if see is not None:               # gaps are the loss measure there
                        see(int(stamp[stamp.find(b":") + 1:]))
                    feed(rtype, stamp, body)
                except ValueError:                    # RecordError included: counted
                    self.rejected += 1
        self.records += count
        return count

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

    def run(self, should_stop, wakeup_fd=None, on_tick=None):
        loop.run(self, should_stop, wakeup_fd, on_tick)

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
            deadline = time.monotonic() + 2.0
            quiet_since = time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.3:
                if self.pump():
                    quiet_since = time.monotonic()
                else:
                    time.sleep(0.02)
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

    def stats(self):
        lost = self.kernel_lost + (self.gaps.lost if self.mode in ("multicast", "input") else 0)
        return {"backend": "audit", "mode": self.mode, "events": self.assembler.events,
                "lost": lost, "kernel_lost": self.kernel_lost, "serial_gaps": self.gaps.lost,
                "enobufs": self.enobufs, "incomplete": self.assembler.incomplete,
                "records": self.records, "rejected": self.rejected,
                "foreign": self.assembler.foreign, "orphans": self.assembler.orphans,
                "in_flight": self.assembler.in_flight,
                "rotations": getattr(self.text, "rotations", 0)}


def _native_arch():
    from ..syscalls import host_arch
    arch = host_arch(os.uname().machine)
    if arch is None:
        raise AuditError(errno.ENOTSUP, "unsupported machine %s" % os.uname().machine)
    return arch

