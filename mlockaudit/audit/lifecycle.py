"""What the audit backend changes in the kernel, and how it is undone: on a normal stop,
on signals, and after a crash (``cleanup`` and the next ``start``).

Owned here: the rules mlockaudit added (their exact bytes), the daemon registration
(AUDIT_SET pid), ``enabled`` and ``backlog_limit``. Each change is written to the session
state *before* it is made (write-ahead), so a crash in between leaves at worst an undo
that finds nothing to do. Undo only restores a setting while it still holds the value we
set: if someone changed it since, it is theirs now and stays.

Never touched: rules we did not add. A rule that was already loaded (AUDIT_ADD_RULE
answers EEXIST, e.g. rules/50-mlockaudit.rules loaded by augenrules) is not ours, so it is
not removed at stop either.
"""

import errno

from .. import procfs
from . import rules as audit_rules
from .netlink import AuditControl, AuditError


class DeadRunError(Exception):
    """A dead run's audit changes are recorded but cannot be undone from here."""


class AuditSetup(object):
    """Applies the audit changes of one run and records them in ``session``."""

    def __init__(self, control, session):
        self.control = control
        self.session = session
        self.section = session.section("audit")
        self.notes = []          # things the operator should know (printed by the daemon)

    def install_rules(self, rule_list):
        """Add each rule; returns how many this run added (EEXIST ones are not ours)."""
        added = self.section.setdefault("rules", [])
        count = 0
        for rule in rule_list:
            data = rule.to_bytes().hex()
            added.append(data)
            self.session.commit()
            try:
                self.control.add_rule(bytes.fromhex(data))
                count += 1
            except AuditError as exc:
                added.remove(data)
                self.session.commit()
                if exc.errno == errno.EEXIST:
                    self.notes.append("rule already loaded (not ours, left alone): %s"
                                      % rule.to_text())
                    continue
                if exc.errno == errno.EPERM:
                    raise AuditError(exc.errno, "the kernel refused the audit rule (EPERM): "
                                     "audit is locked (enabled=2) or CAP_AUDIT_CONTROL is missing")
                raise
        return count

    def enable(self):
        """Turn audit on if it is off. Returns True when this run turned it on."""
        status = self.control.status()
        if status["enabled"] == 2:
            return False                      # locked on (immutable): nothing to change
        if status["enabled"] == 1:
            return False
        self.section["enabled_before"] = status["enabled"]
        self.section["enabled_set"] = 1
        self.session.commit()
        self.control.set_status(enabled=1)
        return True

    def raise_backlog(self, limit):
        """backlog_limit to at least ``limit`` (records wait there while the reader is busy;
        past it the kernel makes callers wait, backlog_wait_time, before it drops)."""
        status = self.control.status()
        if status["backlog_limit"] >= limit:
            return False
        self.section["backlog_before"] = status["backlog_limit"]
        self.section["backlog_set"] = limit
        self.session.commit()
        self.control.set_status(backlog_limit=limit)
        return True

    def register(self, reader, pid):
        """Become the audit daemon through ``reader`` (the socket that will read)."""
        self.section["registered_pid"] = pid
        self.session.commit()
        try:
            reader.register()
        except AuditError:
            del self.section["registered_pid"]
            self.session.commit()
            raise

    def remove_rules(self):
        """Delete the rules this run added (first step of a stop: no new records)."""
        problems = _delete_rules(self.control, self.section.get("rules", []))
        self.section["rules"] = []
        self.session.commit()
        return problems

    def release(self, reader=None):
        """Unregister and restore the settings; returns problems (strings)."""
        problems = remove_changes(self.control, self.section, reader)
        for key in ("registered_pid", "backlog_before", "backlog_set", "enabled_before",
                    "enabled_set"):
            self.section.pop(key, None)
        self.session.commit()
        return problems


def _delete_rules(control, hex_rules):
    """Delete rules by the bytes we added them with; then check the kernel holds none of
    them any more (a delete that matched nothing answers ENOENT, which alone would hide a
    rule we failed to recognise)."""
    problems = []
    stored = [audit_rules.as_stored(bytes.fromhex(data)) for data in reversed(list(hex_rules))]
    for data in stored:
        try:
            control.delete_rule(data)
        except AuditError as exc:
            if exc.errno != errno.ENOENT:           # already gone (deleted by an admin)
                problems.append("could not delete an audit rule: %s" % exc)
    if stored:
        remaining = set(control.list_rules()).intersection(stored)
        for data in remaining:
            rule = audit_rules.parse_rule_bytes(data)
            problems.append("audit rule still loaded after delete: key=%s action=%s pid=%s" % (
                rule["key"], rule["action"], rule["pid"]))
    return problems


def remove_changes(control, section, reader=None):
    """Undo ``section`` (a live run's or a dead run's): rules, registration, settings."""
    problems = _delete_rules(control, section.get("rules", []))
    status = control.status()
    registered = section.get("registered_pid")
    if registered is not None:
        if reader is not None:
            error = reader.unregister()
            if error and error != errno.ENOENT:
                problems.append("AUDIT_SET pid=0 failed: errno %d" % error)
        elif status["pid"] == registered and not procfs.process_alive(registered):
            try:
                control.set_status(pid=0)     # the kernel checks the dead port and resets
            except AuditError as exc:
                problems.append("could not release the audit pid %d: %s" % (registered, exc))
    status = control.status()
    if "backlog_before" in section and status["backlog_limit"] == section.get("backlog_set"):
        control.set_status(backlog_limit=section["backlog_before"])
    if "enabled_before" in section and status["enabled"] == section.get("enabled_set"):
        control.set_status(enabled=section["enabled_before"])
    return problems


def stray_rules(control):
    """Rules keyed ``mlockaudit`` in the kernel -> (ours from a dead run, others).

    A never-rule with a pid condition is the own-process filter of a run; when that pid
    is dead the run crashed and the rule is ours to remove even without a state file.
    Always-rules keyed mlockaudit without a state file may come from a rules file loaded
    by augenrules: they are reported, not removed."""
    dead, others = [], []
    for data in control.list_rules():
        try:
            rule = audit_rules.parse_rule_bytes(data)
        except ValueError:
            continue
        if rule["key"] != audit_rules.KEY:
            continue
        if rule["action"] == audit_rules.AUDIT_NEVER and rule["pid"] is not None \
                and not procfs.process_alive(rule["pid"]):
            dead.append(data)
        else:
            others.append(data)
    return dead, others


def dead_daemon_pid(control):
    """The registered audit pid when it points at a process that is gone, else None."""
    pid = control.status()["pid"]
    if pid and not procfs.process_alive(pid):
        return pid
    return None


def cleanup_dead(section, log=None):
    """``cleanup`` and the next ``start``: a dead run's audit changes, from its state
    section, then what survives without it: a never-rule of a dead pid, an audit pid that
    points at a dead process. Raises DeadRunError when a dead run's changes are known
    but audit cannot be reached to undo them."""
    done = []
    try:
        control = AuditControl()
    except (OSError, ImportError) as exc:           # no NETLINK_AUDIT, or no pyroute2
        if section:
            raise DeadRunError("cannot reach the audit subsystem to undo a dead run: %s" % exc)
        return done
    with control:
        if section:
            problems = remove_changes(control, section)
            done.append("audit: undid a dead run's changes (%d rules)" % len(section.get("rules", [])))
            done += ["audit: " + problem for problem in problems]
        dead_rules, others = stray_rules(control)
        for data in dead_rules:
            try:
                control.delete_rule(data)
                done.append("audit: deleted the own-process rule of a dead mlockaudit")
            except AuditError as exc:
                done.append("audit: could not delete a stray rule: %s" % exc)
        pid = dead_daemon_pid(control)
        if pid:
            try:
                control.set_status(pid=0)
                done.append("audit: released audit pid %d (a dead process)" % pid)
            except AuditError as exc:
                done.append("audit: could not release dead audit pid %d: %s" % (pid, exc))
        if others and log is not None and not section:
            log("audit: %d rule(s) keyed mlockaudit were left in place: no mlockaudit run "
                "installed them (a rules file loaded by augenrules?)" % len(others))
    return done
