"""/proc, in one place (in the spirit of psutil's Linux module): pure parsers over the
bytes of /proc files, and :class:`ProcFS`, whose reads take a root (tests point it at a
directory tree) and turn every race with an exiting process into one answer: None.

A process may exit between any two reads, and its pid may then be reused, so:

* every read returns None instead of raising when the file is gone or unreadable;
* what belongs together is checked together: a caller that knows when a task started
  (its start time in clock ticks since boot, field 22 of stat) passes it, and a process
  found under that pid with another start time is another process: None again.
"""

import os
import re

#: USER_HZ: the unit of /proc/PID/stat's start time (100 on every Linux ABI).
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_CONTAINER_ID = re.compile(rb"([0-9a-f]{64})")
_NS_LINK = re.compile(r"\[(\d+)\]")


# -- pure parsers ---------------------------------------------------------------------

def parse_stat(data):
    """/proc/PID/stat -> (state, ppid, start_ticks) or None. The comm (field 2) may hold
    spaces and ')', so fields are counted from the last ')'."""
    if not data:
        return None
    try:
        fields = data[data.rindex(b")") + 2:].split()
        return fields[0], int(fields[1]), int(fields[19])
    except (ValueError, IndexError):
        return None


def parse_status(data):
    """/proc/PID/status -> {b"Tgid": [..], b"PPid": [..], b"Uid": [..], b"Gid": [..],
    b"NSpid": [..], b"NStgid": [..]} as lists of ints (other keys left out)."""
    out = {}
    if not data:
        return out
    for line in data.split(b"\n"):
        key, sep, value = line.partition(b":")
        if sep and key in (b"Tgid", b"PPid", b"Uid", b"Gid", b"NSpid", b"NStgid"):
            try:
                out[key] = [int(part) for part in value.split()]
            except ValueError:
                continue
    return out


def parse_comm(data):
    """/proc/PID/comm -> the comm's exact bytes (the file adds one newline; a comm may end
    in newlines of its own)."""
    if data is None:
        return None
    return data[:-1] if data.endswith(b"\n") else data


def parse_cmdline(data):
    """/proc/PID/cmdline -> the command line, NULs as spaces (as ps shows it), or None."""
    if not data:
        return None
    return data.rstrip(b"\0").replace(b"\0", b" ")


def parse_cgroup(data):
    """/proc/PID/cgroup -> (container id or "" when none, cgroup v2 path or None)."""
    if data is None:
        return None, None
    found = _CONTAINER_ID.findall(data)
    path = None
    for line in data.split(b"\n"):
        if line.startswith(b"0::"):
            path = line[3:].decode("utf-8", "surrogateescape")
    return (found[-1].decode() if found else ""), path


def parse_ns_link(text):
    """``mnt:[4026531841]`` -> 4026531841, or None."""
    match = _NS_LINK.search(text or "")
    return int(match.group(1)) if match else None


def ticks_to_ns(ticks):
    return ticks * (1000000000 // TICKS) if 1000000000 % TICKS == 0 else \
        ticks * 1000000000 // TICKS


# -- reading ----------------------------------------------------------------------------

class ProcessDetails(object):
    """What /proc says about a live process, beyond its identity."""

    __slots__ = ("tgid", "ppid", "start_ticks", "uid", "euid", "suid", "fsuid", "gid",
                 "egid", "sgid", "fsgid", "ns_pid", "ns_ppid", "cmdline", "container_id",
                 "cgroup_path", "mnt_ns", "pid_ns", "exe", "comm")


class ThreadDetails(object):
    __slots__ = ("tid", "tgid", "start_ticks", "comm", "ns_tid")


class SnapshotTask(object):
    """One thread as /proc showed it: what ``ProcFS.snapshot_tasks`` returns, and
    what the tracefs identity model (tracefs/tasks.py) starts from."""

    __slots__ = ("tid", "tgid", "ppid", "comm", "exe", "start_ns")

    def __init__(self, tid, tgid, ppid, comm, exe, start_ns):
        self.tid = tid
        self.tgid = tgid
        self.ppid = ppid
        self.comm = comm
        self.exe = exe
        self.start_ns = start_ns


class ProcFS(object):
    """Reads under ``root`` (/proc by default). Every method returns None for a task that
    is gone, a zombie, or (with ``start_ticks``) another task under the same id."""

    def __init__(self, root="/proc"):
        self.root = root

    def path(self, pid, name):
        return "%s/%d/%s" % (self.root, pid, name)

    def read(self, pid, name):
        try:
            with open(self.path(pid, name), "rb") as handle:
                return handle.read()
        except (OSError, ValueError):        # gone, permission, ESRCH mid-read
            return None

    def readlink(self, pid, name):
        try:
            return os.readlink(self.path(pid, name))
        except (OSError, ValueError):
            return None

    def pids(self):
        try:
            return [int(name) for name in os.listdir(self.root) if name.isdigit()]
        except OSError:
            return []

    def tids(self, pid):
        try:
            return [int(name) for name in os.listdir(self.path(pid, "task")) if name.isdigit()]
        except OSError:
            return []

    def stat(self, pid):
        return parse_stat(self.read(pid, "stat"))

    def alive(self, pid, start_ticks=None):
        """A running (not zombie) task under ``pid``, started at ``start_ticks`` if given."""
        if pid <= 0:
            return False
        stat = self.stat(pid)
        if stat is None or stat[0] in (b"Z", b"X"):
            return False
        return start_ticks is None or stat[2] == start_ticks

    def start_ticks(self, pid):
        stat = self.stat(pid)
        return stat[2] if stat is not None else None

    def exe(self, pid):
        link = self.readlink(pid, "exe")
        if link is None:
            return None
        return link if isinstance(link, bytes) else link.encode("utf-8", "surrogateescape")

    def thread(self, tid, start_ticks=None):
        """ThreadDetails of any thread id (/proc/TID works for threads too), or None."""
        stat = self.stat(tid)
        if stat is None or stat[0] in (b"Z", b"X"):
            return None
        if start_ticks is not None and stat[2] != start_ticks:
            return None
        status = parse_status(self.read(tid, "status"))
        comm = parse_comm(self.read(tid, "comm"))
        if not status.get(b"Tgid") or comm is None:
            return None
        if self.start_ticks(tid) != stat[2]:              # replaced while we read
            return None
        info = ThreadDetails()
        info.tid, info.tgid, info.start_ticks, info.comm = tid, status[b"Tgid"][0], stat[2], comm
        info.ns_tid = status[b"NSpid"][-1] if status.get(b"NSpid") else None
        return info

    def process(self, tgid, start_ticks=None):
        """ProcessDetails of a live process, or None (gone, zombie, another process)."""
        stat = self.stat(tgid)
        if stat is None or stat[0] in (b"Z", b"X"):
            return None
        if start_ticks is not None and stat[2] != start_ticks:
            return None
        status = parse_status(self.read(tgid, "status"))
        if not status.get(b"Uid") or not status.get(b"Gid"):
            return None
        info = ProcessDetails()
        info.tgid, info.ppid, info.start_ticks = tgid, stat[1], stat[2]
        uids = (status[b"Uid"] + [None] * 4)[:4]
        gids = (status[b"Gid"] + [None] * 4)[:4]
        info.uid, info.euid, info.suid, info.fsuid = uids
        info.gid, info.egid, info.sgid, info.fsgid = gids
        ns_pids = status.get(b"NSpid") or []
        info.ns_pid = ns_pids[-1] if ns_pids else None
        info.ns_ppid = None
        if len(ns_pids) > 1:              # in a child pid namespace: the parent's id there
            parent = parse_status(self.read(stat[1], "status")).get(b"NSpid") or []
            if len(parent) == len(ns_pids):
                info.ns_ppid = parent[-1]
        else:
            info.ns_ppid = stat[1]
        info.cmdline = parse_cmdline(self.read(tgid, "cmdline"))
        info.container_id, info.cgroup_path = parse_cgroup(self.read(tgid, "cgroup"))
        info.mnt_ns = parse_ns_link(self.readlink(tgid, "ns/mnt"))
        info.pid_ns = parse_ns_link(self.readlink(tgid, "ns/pid"))
        info.exe = self.exe(tgid)
        info.comm = parse_comm(self.read(tgid, "comm"))
        after = self.stat(tgid)
        if after is None or after[2] != stat[2] or after[0] in (b"Z", b"X"):
            return None                                   # exited or replaced while we read
        if info.cmdline is None and info.exe is None:
            # exiting: the kernel has released its memory (exit_mm), so cmdline reads
            # empty and exe has no link, before the task turns zombie; what was read
            # is half a process, and a user process calling the family has both
            return None
        return info

    def snapshot_tasks(self):
        """Every thread now: [SnapshotTask] (tid, tgid, ppid, comm, exe, start_ns)."""
        tasks = []
        for pid in self.pids():
            stat = self.stat(pid)
            if stat is None or stat[0] in (b"Z", b"X"):
                continue
            exe = self.exe(pid)
            for tid in self.tids(pid) or [pid]:
                thread_stat = stat if tid == pid else parse_stat(
                    self.read(pid, "task/%d/stat" % tid))
                comm = parse_comm(self.read(pid, "task/%d/comm" % tid))
                if thread_stat is None or comm is None:
                    continue
                tasks.append(SnapshotTask(tid, pid, stat[1], comm, exe,
                                          ticks_to_ns(thread_stat[2])))
        return tasks


#: The host's /proc.
PROC = ProcFS()


def read_bytes(path):
    """A whole file, or None when it cannot be read (gone, permissions)."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (OSError, ValueError):
        return None


def start_time(pid):
    """Field 22 of /proc/PID/stat (clock ticks since boot): with the pid, a unique id of a
    process, since a pid may be reused but not at the same start time."""
    return PROC.start_ticks(pid)


def process_alive(pid, expected_start=None):
    """True when pid is a running process (and, if given, started at ``expected_start``).
    A zombie (exited, not yet reaped) is dead: it holds no file, lock, socket or ftrace
    instance any more."""
    return PROC.alive(pid, expected_start)


def self_start_time():
    return start_time(os.getpid())
