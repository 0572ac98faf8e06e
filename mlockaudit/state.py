"""What a running mlockaudit changed in the kernel, written down before each change, so a
crash (kill -9, OOM, power loss of the process) never strands a rule, a probe, an
instance or a changed audit setting: ``cleanup`` and the next ``start`` read it back.

Two files under the run directory (``/run/mlockaudit``, tmpfs: gone at reboot, exactly
when the kernel forgets the rules too):

* ``lock``: an flock held for the life of ``start``; one instance per host. The kernel
  drops the lock when the process dies, however it dies.
* ``state.json``: owner pid + start time, and per backend what was installed or changed.
  Rewritten atomically (write, fsync, rename) before every change it describes.

The directory is private (0700, ours, not a link; systemd's RuntimeDirectory= is tightened)
and its files 0600, opened without following links (safefiles): a forged state file would
tell ``cleanup`` what to "undo" in the kernel.
"""

import errno
import fcntl
import json
import os

from . import procfs, safefiles


def run_dir():
    return os.environ.get("MLOCKAUDIT_RUN_DIR", "/run/mlockaudit")


class AlreadyRunning(Exception):
    """Another mlockaudit holds the instance lock."""


class InstanceLock(object):
    """The one-instance-per-host lock."""

    def __init__(self, directory=None):
        self.directory = directory or run_dir()
        self.path = os.path.join(self.directory, "lock")
        self._fd = None

    def acquire(self):
        safefiles.private_dir(self.directory)
        fd, _created = safefiles.open_file(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                owner = StateFile(self.directory).load() or {}
                raise AlreadyRunning(
                    "another mlockaudit is running (pid %s); one instance per host "
                    "(lock: %s)" % (owner.get("pid", "unknown"), self.path))
            raise
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self._fd = fd
        return self

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def held_by_other(self):
        """True when a live process holds the lock (checked without keeping it)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False


class StateFile(object):
    """state.json: read, update and remove, atomically."""

    def __init__(self, directory=None):
        self.directory = directory or run_dir()
        self.path = os.path.join(self.directory, "state.json")

    def load(self):
        """The state, or None when there is none or it is unreadable; a refused file (a
        link, another uid's) raises safefiles.UnsafePath: never trusted, never ignored."""
        try:
            data = json.loads(safefiles.read_file(self.path).decode("utf-8"))
            return data if isinstance(data, dict) else None
        except safefiles.UnsafePath:
            raise
        except (OSError, ValueError):
            return None

    def save(self, data):
        safefiles.private_dir(self.directory)
        tmp = self.path + ".tmp"
        fd, _created = safefiles.open_file(tmp, os.O_WRONLY)
        os.ftruncate(fd, 0)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, self.path)

    def remove(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class Session(object):
    """This process's record of what it changed: ``session.section("audit")`` is a dict the
    backend fills; ``session.commit()`` writes it out (call it before each change)."""

    def __init__(self, store=None):
        self.store = store or StateFile()
        self.data = {"pid": os.getpid(), "start_time": procfs.self_start_time()}

    def section(self, name):
        return self.data.setdefault(name, {})

    def commit(self):
        self.store.save(self.data)

    def finish(self):
        """Everything was undone: forget the state."""
        self.store.remove()


def stale_state(store=None):
    """The state of an mlockaudit that is gone (its pid dead, or reused by another
    process), or None when there is none or its owner still runs."""
    data = (store or StateFile()).load()
    if not data:
        return None
    pid, started = data.get("pid"), data.get("start_time")
    if isinstance(pid, int) and procfs.process_alive(pid, started):
        return None
    return data
