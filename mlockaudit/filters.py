"""Which events reach the outputs: include/exclude by uid, comm, exe and pid, failures
only. From the command line or the config file; rebuilt on SIGHUP.

Semantics: an include list, when given, admits only matching events; an exclude list then
removes matching ones; ``failures_only`` keeps calls that returned an error (and calls
whose return is unknown: an incomplete call is never hidden by a filter that cannot
decide). comm and exe match exactly or as shell globs (``fnmatch``: ``ssh*``,
``/usr/lib/*``). mlockaudit's own process is always excluded: a tracer must never
report itself.
"""

import fnmatch
import os


class FilterError(ValueError):
    pass


def _ints(values, what):
    try:
        return frozenset(int(value) for value in values)
    except ValueError:
        raise FilterError("%s takes numbers, got %s" % (what, ", ".join(map(str, values))))


def _matcher(patterns):
    """A predicate over a str (or None) for exact names and globs."""
    patterns = list(patterns)
    exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    globs = [p for p in patterns if p not in exact]

    def matches(value):
        if value is None:
            return False
        return value in exact or any(fnmatch.fnmatchcase(value, glob) for glob in globs)
    return matches


class EventFilter(object):
    """A predicate over Events; ``accepts(event)``."""

    def __init__(self, include_uid=(), exclude_uid=(), include_comm=(), exclude_comm=(),
                 include_exe=(), exclude_exe=(), include_pid=(), exclude_pid=(),
                 failures_only=False, own_pid=None):
        self.checks = []
        if include_uid:
            uids = _ints(include_uid, "--include-uid")
            self.checks.append(lambda e: e.process.uid in uids)
        if exclude_uid:
            uids = _ints(exclude_uid, "--exclude-uid")
            self.checks.append(lambda e: e.process.uid not in uids)
        if include_pid:
            pids = _ints(include_pid, "--include-pid")
            self.checks.append(lambda e: e.process.pid in pids)
        if exclude_pid:
            pids = _ints(exclude_pid, "--exclude-pid")
            self.checks.append(lambda e: e.process.pid not in pids)
        if include_comm:
            match = _matcher(include_comm)
            self.checks.append(lambda e: match(e.process.comm))
        if exclude_comm:
            match = _matcher(exclude_comm)
            self.checks.append(lambda e: not match(e.process.comm))
        if include_exe:
            match = _matcher(include_exe)
            self.checks.append(lambda e: match(e.process.exe))
        if exclude_exe:
            match = _matcher(exclude_exe)
            self.checks.append(lambda e: not match(e.process.exe))
        if failures_only:
            self.checks.append(lambda e: e.ret is None or e.ret < 0)
        self.own_pid = os.getpid() if own_pid is None else own_pid
        self.dropped = 0

    def accepts(self, event):
        if event.process.pid == self.own_pid:
            return False
        for check in self.checks:
            if not check(event):
                return False
        return True

    def wrap(self, emit):
        """``emit`` behind this filter (counting what it drops)."""
        accepts = self.accepts

        def filtered(event):
            if accepts(event):
                emit(event)
            else:
                self.dropped += 1
        return filtered
