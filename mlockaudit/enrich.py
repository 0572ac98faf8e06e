"""What /proc adds to an event while the calling process lives, for both backends: real
and effective ids (tracefs: a trace record has none), the pids inside the process's pid
namespace (Tracee's processId/threadId/parentProcessId), the container id, the mount and
pid namespaces, the cgroup id, the command line (tracefs), and the start times Tracee's
entity ids are made of.

Read after the call, so a pid may already belong to another process. Each reader is told
which process it must find: its start time when the source knows it (the tracefs task
model does), else "started before the call" (audit: the record's time), and a process
that does not match is not used: the fields stay null, never guessed.

Bounded caches, revalidated about once a second (a setuid changes the ids, a container's
cgroup rarely changes), so a storm from one process reads /proc once per second, not per
call.
"""

import os
import time

from . import host, procfs

REVALIDATE_SECONDS = 1.0
MAX_CACHED = 4096
#: /proc start times are clock ticks (10 ms); a stream-known start is exact.
START_TOLERANCE_NS = 20000000


class ProcDetails(object):
    """The /proc facts of one process, and of the thread when asked, at one moment."""

    __slots__ = ("process", "start_ns", "cgroup_id", "read_at")

    def __init__(self, process, start_ns, cgroup_id, read_at):
        self.process = process          # procfs.ProcessDetails
        self.start_ns = start_ns        # leader start, CLOCK_BOOTTIME ns
        self.cgroup_id = cgroup_id
        self.read_at = read_at


class ProcCache(object):
    """``details(tgid, start_ns=None, before_ns=None)``: procfs details of the process
    ``tgid`` that started at ``start_ns`` (boot ns, ±tolerance) or, when that is unknown,
    started no later than ``before_ns``; None when it is gone or another process."""

    def __init__(self, proc=None, clock=time.monotonic, cgroup_root=None):
        self.proc = proc or procfs.PROC
        self._clock = clock
        self._cache = {}
        self._threads = {}
        self._cgroup_root = cgroup_root
        self._cgroup_ids = {}
        self.gone = 0               # processes gone (or replaced) before they were read
        self.reads = 0

    def cgroup_root(self):
        if self._cgroup_root is None:
            self._cgroup_root = host.cgroup2_root() or ""
        return self._cgroup_root

    def cgroup_id(self, path):
        """Tracee's cgroupId on cgroup v2: the inode of the process's cgroup directory."""
        if path is None or not self.cgroup_root():
            return None
        cached = self._cgroup_ids.get(path)
        if cached is None:
            try:
                cached = os.stat(self.cgroup_root() + path).st_ino
            except OSError:
                cached = 0
            if len(self._cgroup_ids) >= MAX_CACHED:
                self._cgroup_ids.clear()
            self._cgroup_ids[path] = cached
        return cached or None

    def details(self, tgid, start_ns=None, before_ns=None):
        if tgid is None or tgid <= 0:
            return None
        now = self._clock()
        cached = self._cache.get(tgid)
        if cached is not None and now - cached.read_at < REVALIDATE_SECONDS:
            # a fresh reading decides, whether it found the process gone, another one
            # under the pid, or the one asked for: /proc is not read again per call
            if cached.process is None or not _matches(cached.start_ns, start_ns, before_ns):
                return None
            return cached
        self.reads += 1
        info = self.proc.process(tgid)
        if info is None:
            # gone: remembered for a while, so that the calls of a process that exited do
            # not each read /proc again
            self.gone += 1
            self._store(tgid, ProcDetails(None, None, None, now))
            return None
        started = procfs.ticks_to_ns(info.start_ticks)
        details = ProcDetails(info, started, self.cgroup_id(info.cgroup_path), now)
        self._store(tgid, details)
        if not _matches(started, start_ns, before_ns):
            self.gone += 1                      # the pid belongs to a newer process now
            return None
        return details

    def _store(self, tgid, details):
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[tgid] = details

    def thread_ns_tid(self, tid, start_ns=None, before_ns=None):
        """A thread's id inside its pid namespace, while it lives (cached)."""
        cached = self._threads.get(tid)
        now = self._clock()
        if cached is not None and cached[1] is not None \
                and now - cached[2] < REVALIDATE_SECONDS and _matches(cached[1], start_ns,
                                                                      before_ns):
            return cached[0]
        if cached is not None and cached[1] is None and now - cached[2] < REVALIDATE_SECONDS:
            return None                         # found gone a moment ago
        thread = self.proc.thread(tid)
        started = procfs.ticks_to_ns(thread.start_ticks) if thread is not None else None
        if thread is None or not _matches(started, start_ns, before_ns):
            if len(self._threads) >= MAX_CACHED:
                self._threads.clear()
            self._threads[tid] = (None, None, now)
            return None
        if len(self._threads) >= MAX_CACHED:
            self._threads.clear()
        self._threads[tid] = (thread.ns_tid, started, now)
        return thread.ns_tid


def _matches(started, start_ns, before_ns):
    """Is a task that started at ``started`` (boot ns) the one we look for?"""
    if started is None:
        return start_ns is None
    if start_ns is not None:
        return abs(started - start_ns) <= START_TOLERANCE_NS
    if before_ns is not None:
        return started <= before_ns + START_TOLERANCE_NS
    return True


class LiveDetails(object):
    """For a source whose records already say who the process was (audit): adds what only
    the live process can tell, ``(process, timestamp) -> process``. The process found
    under the record's pid must have started no later than the call; a Process is made
    once per (identity, /proc reading) and shared, like the record's own."""

    def __init__(self, cache=None, boot_epoch_ns=None):
        self.cache = cache or ProcCache()
        self.boot_epoch_ns = host.boot_epoch_ns() if boot_epoch_ns is None else boot_epoch_ns
        self._made = {}

    def __call__(self, process, timestamp):
        before = timestamp - self.boot_epoch_ns if timestamp is not None else None
        details = self.cache.details(process.pid, before_ns=before)
        if details is None:
            return process
        key = (process, details)
        made = self._made.get(key)
        if made is None:
            info = details.process
            parent = self.cache.details(process.ppid, before_ns=details.start_ns) \
                if process.ppid else None
            made = process.replace(
                ns_pid=info.ns_pid, ns_ppid=info.ns_ppid, container_id=info.container_id,
                mnt_ns=info.mnt_ns, pid_ns=info.pid_ns, cgroup_id=details.cgroup_id,
                start_time=details.start_ns + self.boot_epoch_ns,
                parent_start_time=parent.start_ns + self.boot_epoch_ns if parent else None)
            if len(self._made) >= MAX_CACHED:
                self._made.clear()
            self._made[key] = made
        return made
