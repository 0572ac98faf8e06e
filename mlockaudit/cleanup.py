"""``mlockaudit cleanup`` (and the first step of every ``start``): undo what a run that is
gone left in the kernel. Never touches what a live mlockaudit owns, nor anything that is
not mlockaudit's (other tools' rules, probes, instances).

Sources of truth, in order:
1. the state file of a dead run (state.py): exactly what that run installed and changed;
2. signatures that survive without it: a ``never`` rule keyed mlockaudit whose pid is
   dead (our own-process filter), an audit pid that points at a dead process, tracefs
   instances and probe groups named after a dead mlockaudit process.
"""

import os

from .state import InstanceLock, StateFile, stale_state


class CleanupError(Exception):
    """cleanup cannot run (e.g. a live mlockaudit owns the state)."""


def cleanup_stale(log=None):
    """Undo what dead runs left. Returns a list of what was done (strings).

    Called by ``start`` after it took the instance lock, and by ``cleanup``."""
    done = []
    store = StateFile()
    state = stale_state(store)          # (a live owner, this process included, is not stale)
    audit_section = (state or {}).get("audit") or {}
    done += _cleanup_tracefs((state or {}).get("tracefs") or {})
    done += _cleanup_audit(audit_section, log)
    if state is not None:
        store.remove()
        done.append("removed the state of dead run pid %s" % state.get("pid"))
    return done


def _cleanup_tracefs(section):
    """A dead run's instance, probes and mount (from its state), then any instance or
    probe group named after a dead mlockaudit process (state lost)."""
    from .tracefs import instance as tracefs
    from .tracefs.source import remove_changes
    done = []
    if section:
        problems = remove_changes(None, section)
        done.append("tracefs: undid a dead run's changes")
        done += ["tracefs: " + problem for problem in problems]
    root = tracefs.find_tracefs()
    if root is None:
        return done
    for name in tracefs.stale_instances(root):
        try:
            tracefs.remove_instance_dir(os.path.join(root, "instances", name))
            done.append("tracefs: removed instance %s of a dead mlockaudit" % name)
        except tracefs.TracefsError as exc:
            done.append("tracefs: %s" % exc)
    for probe in tracefs.stale_probes(root):
        try:
            with open(os.path.join(root, "kprobe_events"), "a") as handle:
                handle.write("-:%s\n" % probe)
            done.append("tracefs: removed kprobe %s of a dead mlockaudit" % probe)
        except OSError as exc:
            done.append("tracefs: could not remove kprobe %s: %s" % (probe, exc.strerror))
    return done


def _cleanup_audit(section, log):
    done = []
    try:
        from .audit.netlink import AuditControl, AuditError
        from .audit import lifecycle
    except ImportError:                             # pyroute2 missing: nothing to do here
        return done
    try:
        control = AuditControl()
    except (OSError, ImportError) as exc:           # no NETLINK_AUDIT, or no pyroute2
        if section:
            raise CleanupError("cannot reach the audit subsystem to undo a dead run: %s" % exc)
        return done
    with control:
        if section:
            problems = lifecycle.remove_changes(control, section)
            done.append("audit: undid a dead run's changes (%d rules)" % len(section.get("rules", [])))
            done += ["audit: " + problem for problem in problems]
        dead_rules, others = lifecycle.stray_rules(control)
        for data in dead_rules:
            try:
                control.delete_rule(data)
                done.append("audit: deleted the own-process rule of a dead mlockaudit")
            except AuditError as exc:
                done.append("audit: could not delete a stray rule: %s" % exc)
        pid = lifecycle.dead_daemon_pid(control)
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


def run_cleanup(log):
    """``mlockaudit cleanup``: refuses while a live mlockaudit holds the lock."""
    lock = InstanceLock()
    if lock.held_by_other():
        raise CleanupError("an mlockaudit is running (lock %s): stop it, it cleans up after "
                           "itself" % lock.path)
    lock.acquire()
    try:
        return cleanup_stale(log)
    finally:
        lock.release()
