"""What tracefs does not tell about the calling process, read from /proc: parent, real and
effective ids, executable, command line, container id, and the pids as the process sees
them inside its pid namespace (Tracee's processId/threadId/parentProcessId).

Read after the fact, so three rules keep it honest:

* a pid can be reused: the process found under the pid must have started *before* the
  call (its start time in /proc/PID/stat vs the call's trace time), otherwise it is
  another process and nothing is taken from it;
* a process that is gone gives ``None`` for everything /proc would have said;
* reads are cached per (tgid, comm), revalidated by start time once a second, so a storm
  from one process does not read /proc per call.
"""

import os
import re
import time

from . import procfs
from .event import Process
from .tracefs.lines import decode_comm

_CONTAINER_ID = re.compile(rb"([0-9a-f]{64})")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
REVALIDATE_SECONDS = 1.0


class ProcInfo(object):
    """/proc facts about one process (all optional)."""

    __slots__ = ("start_ticks", "ppid", "uid", "euid", "gid", "egid", "exe", "cmdline",
                 "container_id", "ns_pids", "ns_ppid")


def read_proc(pid):
    """ProcInfo for pid, or None when it is gone. Races with exit are expected."""
    stat = procfs.read_bytes("/proc/%d/stat" % pid)
    status = procfs.read_bytes("/proc/%d/status" % pid)
    if stat is None or status is None:
        return None
    info = ProcInfo()
    try:
        fields = stat[stat.rindex(b")") + 2:].split()
        info.ppid = int(fields[1])
        info.start_ticks = int(fields[19])
    except (ValueError, IndexError):
        return None
    ids = {}
    for line in status.split(b"\n"):
        key, _, value = line.partition(b":")
        if key in (b"Uid", b"Gid", b"NSpid", b"PPid"):
            ids[key] = value.split()
    uids, gids = ids.get(b"Uid", []), ids.get(b"Gid", [])
    info.uid, info.euid = (int(uids[0]), int(uids[1])) if len(uids) >= 2 else (None, None)
    info.gid, info.egid = (int(gids[0]), int(gids[1])) if len(gids) >= 2 else (None, None)
    info.ns_pids = [int(value) for value in ids.get(b"NSpid", [])]
    info.ns_ppid = None
    try:
        exe = os.readlink("/proc/%d/exe" % pid)
        info.exe = exe.decode("utf-8", "surrogateescape") if isinstance(exe, bytes) else exe
    except OSError:
        info.exe = None
    cmdline = procfs.read_bytes("/proc/%d/cmdline" % pid)
    info.cmdline = (cmdline.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "surrogateescape")
                    if cmdline else None)
    cgroup = procfs.read_bytes("/proc/%d/cgroup" % pid)
    if cgroup is None:
        info.container_id = None
    else:
        found = _CONTAINER_ID.findall(cgroup)
        info.container_id = found[-1].decode() if found else ""
    if len(info.ns_pids) > 1:                 # in a child pid namespace: its parent's id there
        parent = procfs.read_bytes("/proc/%d/status" % info.ppid)
        if parent:
            for line in parent.split(b"\n"):
                if line.startswith(b"NSpid:"):
                    values = line.split()[1:]
                    if len(values) == len(info.ns_pids):
                        info.ns_ppid = int(values[-1])
    else:
        info.ns_ppid = info.ppid
    return info


class ThreadInfo(object):
    """/proc facts about one thread: its start, thread group, comm, namespaced id."""

    __slots__ = ("start_ticks", "tgid", "comm", "ns_tid")


def read_thread(tid):
    """ThreadInfo for a thread id (/proc/TID works for any thread), or None when gone."""
    stat = procfs.read_bytes("/proc/%d/stat" % tid)
    status = procfs.read_bytes("/proc/%d/status" % tid)
    comm = procfs.read_bytes("/proc/%d/comm" % tid)
    if stat is None or status is None or comm is None:
        return None
    info = ThreadInfo()
    try:
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X"):
            return None
        info.start_ticks = int(fields[19])
    except (ValueError, IndexError):
        return None
    info.tgid = info.ns_tid = None
    for line in status.split(b"\n"):
        if line.startswith(b"Tgid:"):
            info.tgid = int(line.split()[1])
        elif line.startswith(b"NSpid:"):
            info.ns_tid = int(line.split()[-1])
    # the file is the comm plus one newline; the comm may end in newlines itself
    info.comm = (comm[:-1] if comm.endswith(b"\n") else comm).decode("utf-8", "surrogateescape")
    return info


class ProcEnricher(object):
    """(tgid column, tid, comm column bytes, call time) -> (Process, namespaced thread id).
    Plugs into tracefs.pairing.Pairer as its ``enricher``.

    The thread id of a trace line comes from the record itself and is always right; the
    tgid and comm columns come from maps ftrace fills at context switches (saved_tgids,
    saved_cmdlines), which do not know a brand-new task yet and may still hold a previous
    task that had the same pid. So the thread is looked up in /proc: when it is alive and
    started before the call, its thread group is authoritative, and if the tgid column
    disagrees, the columns were stale and the comm is taken from /proc too. When the thread
    is gone, the columns are all there is (``procInfo: false`` in the event says so)."""

    def __init__(self, hostname, boot_ns_of_trace=None, clock=time.monotonic):
        self.hostname = hostname
        self.boot_ns_of_trace = boot_ns_of_trace    # trace ts -> ns since boot, if known
        self._clock = clock
        self._cache = {}
        self.gone = 0                               # threads already gone when read
        self.reused = 0                             # pids that belonged to another task
        self.stale_columns = 0                      # tgid column contradicted by /proc

    def __call__(self, tgid, tid, comm_field, ts_ns):
        key = (tid, comm_field) if tid is not None else (tgid, comm_field)
        cached = self._cache.get(key)
        now = self._clock()
        if cached is None or now - cached[2] >= REVALIDATE_SECONDS:
            process, ns_tid, start_ticks = self._build(tgid, tid, decode_comm(comm_field),
                                                       ts_ns, cached)
            if len(self._cache) >= 8192:
                self._cache.clear()
            cached = self._cache[key] = (process, ns_tid, now, start_ticks)
        return cached[0], cached[1]

    def _build(self, tgid, tid, comm, ts_ns, cached):
        thread = read_thread(tid) if tid is not None else None
        if thread is not None and cached is not None and cached[3] == thread.start_ticks:
            return cached[0], cached[1], thread.start_ticks     # the same thread: keep it
        if thread is not None and not self._started_before(thread.start_ticks, ts_ns):
            self.reused += 1
            thread = None
        info = read_proc(thread.tgid) if thread is not None and thread.tgid else None
        if thread is None or info is None:
            self.gone += 1
            return (Process(pid=tgid, comm=comm, hostname=self.hostname,
                            extra={"procInfo": False}), None, None)
        if tgid is not None and tgid != thread.tgid:
            self.stale_columns += 1                 # the maps spoke of a former task
            comm = thread.comm
        elif comm is None:                          # "<...>" in the trace line
            comm = thread.comm
        ns_pids = info.ns_pids
        process = Process(
            pid=thread.tgid, ppid=info.ppid, ns_pid=ns_pids[-1] if ns_pids else None,
            ns_ppid=info.ns_ppid, uid=info.uid, comm=comm, exe=info.exe,
            hostname=self.hostname, container_id=info.container_id,
            extra={"euid": info.euid, "gid": info.gid, "egid": info.egid,
                   "cmdline": info.cmdline, "procInfo": True})
        return process, thread.ns_tid, thread.start_ticks

    def _started_before(self, start_ticks, ts_ns):
        """False when the task under this id started after the call: not the caller."""
        if self.boot_ns_of_trace is None or ts_ns is None:
            return True
        started_ns = start_ticks * (1000000000 // _TICKS)
        return started_ns <= self.boot_ns_of_trace(ts_ns) + 10000000   # /proc is 10 ms coarse
