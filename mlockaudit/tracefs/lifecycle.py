"""What the tracefs backend changes in the kernel, and how it is undone: on a normal stop,
on signals, and after a crash (``cleanup`` and the next ``start``).

Owned here, each recorded in the session state *before* it is made (write-ahead):

* a tracefs mount, when none existed (unmounted at stop, unless busy);
* the private instance ``instances/mlockaudit_<pid>_<starttime>`` (its events, filters,
  buffer size and clock live and die with it);
* the kprobe group of the same name (kprobe mode), line by line in kprobe_events;
* event filters (the surface's locking-only entries, eventfilter.py): each file's content
  before and after is recorded (``filters``), but they are files of *our* instance's
  ``events/`` tree (filters are per instance), so removing the instance is what restores
  them: nothing outside it was changed.

Never touched: the global buffer, other instances, other groups' probes (lines are
appended with O_APPEND and removed one by one, ``-:GROUP/EVENT``; opening kprobe_events
for writing without O_APPEND would clear every tool's probes).

Without a state file (lost, or another run directory) a dead run's objects are still
recognised by name: the pid and start time in the name say whether its owner lives.
"""

import errno
import os

from .. import host
from . import instance as tracefs


TracefsError = tracefs.TracefsError


class TracefsSetup(object):
    """Applies the tracefs changes of one run and records them in ``session``."""

    def __init__(self, session):
        self.session = session
        self.section = session.section("tracefs") if session is not None else {}
        self.root = None
        self.instance = None

    def _commit(self):
        if self.session is not None:
            self.session.commit()

    def mount(self):
        """The tracefs root, mounted first when it is not (recorded)."""
        root = host.find_tracefs()
        if root is not None:
            self.root = root
            return root
        path = host.TRACEFS_PATHS[0]
        if os.path.isdir(path):
            self.section["mounted"] = path
            self._commit()
            host.mount("tracefs", path)
            root = host.find_tracefs()
        if root is None:
            self.section.pop("mounted", None)
            self._commit()
            raise TracefsError(errno.ENODEV, "no tracefs: mount it (mount -t tracefs nodev "
                               "/sys/kernel/tracing) or use --backend audit")
        self.root = root
        return root

    def create_instance(self, name):
        self.section["instance"] = os.path.join(self.root, "instances", name)
        self._commit()
        try:
            self.instance = tracefs.Instance.create(self.root, name)
        except TracefsError:
            self.section.pop("instance", None)
            self._commit()
            raise
        return self.instance

    def set_filter(self, system, event, expression):
        """Write an event filter in our instance (recorded with what it held before)."""
        relative = "events/%s/%s/filter" % (system, event)
        try:
            before = self.instance.read(relative).strip()
        except OSError as exc:
            raise TracefsError(exc.errno, "cannot read %s: %s" % (relative, exc.strerror))
        self.section.setdefault("filters", {})[relative] = {"before": before,
                                                            "set": expression}
        self._commit()
        try:
            self.instance.write(relative, expression)
        except OSError as exc:
            raise TracefsError(exc.errno, "the kernel refused the event filter %r for "
                               "%s/%s: %s%s" % (expression, system, event, exc.strerror,
                                                error_log(self.root)))

    def add_probe_line(self, group, event, line):
        """One kprobe_events line of our group (``p:GROUP/EVENT ...``)."""
        added = self.section.setdefault("probes", [])
        added.append("%s/%s" % (group, event))
        self._commit()
        try:
            append_line(os.path.join(self.root, "kprobe_events"), line)
        except OSError as exc:
            added.pop()
            self._commit()
            raise TracefsError(exc.errno, "kprobe_events refused %r: %s%s" % (
                line, exc.strerror, error_log(self.root)))

    def remove(self):
        """Undo everything of this run; returns problems (empty: tracefs as found)."""
        problems = remove_changes(self.root, self.section, self.instance)
        self._commit()
        return problems


def append_line(path, line):
    """Add a line to kprobe_events without truncating it (O_APPEND)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def error_log(root):
    try:
        with open(os.path.join(root, "error_log")) as handle:
            lines = [line.rstrip() for line in handle if line.strip()]
        return " (error_log: %s)" % " | ".join(lines[-3:]) if lines else ""
    except OSError:
        return ""


def remove_changes(root, section, inst=None):
    """Undo ``section`` (a live run's or a dead run's): instance first (it holds the
    probes' enabled events), then the probes, then the mount. Returns problems."""
    problems = []
    path = section.get("instance")
    if inst is None and path:
        inst = tracefs.Instance(os.path.dirname(os.path.dirname(path)), os.path.basename(path))
    if inst is not None:
        try:
            inst.remove()
        except tracefs.TracefsError as exc:
            problems.append(str(exc))
    if not problems:
        section.pop("instance", None)
        section.pop("filters", None)          # (files of the instance: gone with it)
    root = root or (os.path.dirname(os.path.dirname(path)) if path else host.find_tracefs())
    remaining = []
    for probe in reversed(section.get("probes", [])):
        try:
            append_line(os.path.join(root, "kprobe_events"), "-:" + probe)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                problems.append("could not remove kprobe %s: %s" % (probe, exc.strerror))
                remaining.append(probe)
    if remaining:
        section["probes"] = remaining
    else:
        section.pop("probes", None)
    mounted = section.get("mounted")
    if mounted and not problems:
        if host.unmount(mounted):
            section.pop("mounted", None)
        else:
            problems.append("tracefs stays mounted at %s (busy)" % mounted)
    return problems


def cleanup_dead(section):
    """``cleanup`` and the next ``start``: a dead run's objects, from its state section,
    then any instance or probe group named after a dead mlockaudit (state lost)."""
    done = []
    if section:
        problems = remove_changes(None, section)
        done.append("tracefs: undid a dead run's changes")
        done += ["tracefs: " + problem for problem in problems]
    root = host.find_tracefs()
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
            append_line(os.path.join(root, "kprobe_events"), "-:" + probe)
            done.append("tracefs: removed kprobe %s of a dead mlockaudit" % probe)
        except OSError as exc:
            done.append("tracefs: could not remove kprobe %s: %s" % (probe, exc.strerror))
    return done
