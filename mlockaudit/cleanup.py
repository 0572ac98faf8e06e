"""``mlockaudit cleanup`` (and the first step of every ``start``): undo what a run that is
gone left in the kernel. Never touches what a live mlockaudit owns, nor anything that is
not mlockaudit's (other tools' rules, probes, instances).

Sources of truth, in order:
1. the state file of a dead run (state.py): exactly what that run installed and changed;
2. signatures that survive without it: a ``never`` rule keyed mlockaudit whose pid is
   dead (our own-process filter), an audit pid that points at a dead process, tracefs
   instances and probe groups named after a dead mlockaudit process.
"""

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
    from .tracefs.lifecycle import cleanup_dead
    return cleanup_dead(section)


def _cleanup_audit(section, log):
    try:
        from .audit.lifecycle import DeadRunError, cleanup_dead
    except ImportError:                             # pyroute2 missing: nothing to do here
        if section:
            raise CleanupError("pyroute2 is missing: a dead run's audit changes cannot be "
                               "undone")
        return []
    try:
        return cleanup_dead(section, log)
    except DeadRunError as exc:
        raise CleanupError(str(exc))


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
