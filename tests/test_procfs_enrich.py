"""/proc in one place (procfs.py) and what it adds to events (enrich.py): pure parsers,
reads under a root that a test builds, every race with an exiting process one answer
(None), and nothing taken from a process that started after the call (a reused pid)."""

import os
import subprocess
import sys

import pytest

from mlockaudit import procfs
from mlockaudit.enrich import LiveDetails, ProcCache
from mlockaudit.event import Process

HOLD = ("import ctypes, sys, time; ctypes.CDLL(None).prctl(15, ctypes.c_char_p(bytes.fromhex("
        "sys.argv[1])), 0, 0, 0); print('ready', flush=True); time.sleep(30)")


def hold(comm):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, comm.hex()], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    return proc


def stat_line(pid, comm, state=b"S", ppid=1, start=1000):
    rest = [state, str(ppid).encode()] + [b"0"] * 17 + [str(start).encode()] + [b"0"] * 30
    return b"%d (%s) " % (pid, comm) + b" ".join(rest) + b"\n"


def fake_proc(tmp_path, pid, comm=b"x) (y", tgid=None, ppid=1, start=1000, state=b"S",
              threads=()):
    tgid = tgid or pid
    base = tmp_path / str(pid)
    (base / "task").mkdir(parents=True)
    (base / "ns").mkdir()
    (base / "stat").write_bytes(stat_line(pid, comm, state, ppid, start))
    (base / "status").write_bytes(
        b"Name:\tx\nTgid:\t%d\nPPid:\t%d\nUid:\t1000\t1001\t1002\t1003\nGid:\t10\t11\t12\t13\n"
        b"NSpid:\t%d\t7\n" % (tgid, ppid, pid))
    (base / "comm").write_bytes(comm + b"\n")
    (base / "cmdline").write_bytes(b"./miner\0--pool\0x\0")
    (base / "cgroup").write_bytes(b"0::/system.slice/docker-" + b"a" * 64 + b".scope\n")
    os.symlink("/usr/bin/miner", str(base / "exe"))
    os.symlink("mnt:[4026531841]", str(base / "ns" / "mnt"))
    os.symlink("pid:[4026531836]", str(base / "ns" / "pid"))
    for tid in (pid,) + tuple(threads):
        task = base / "task" / str(tid)
        task.mkdir()
        (task / "stat").write_bytes(stat_line(tid, comm, state, ppid, start + tid - pid))
        (task / "comm").write_bytes(comm + b"\n")
    return base


def test_parsers_take_the_kernels_shapes():
    assert procfs.parse_stat(stat_line(5, b"a) b (c", ppid=3, start=77)) == (b"S", 3, 77)
    assert procfs.parse_stat(b"garbage") is None and procfs.parse_stat(None) is None
    status = procfs.parse_status(b"Tgid:\t5\nUid:\t1 2 3 4\nNSpid:\t5\t1\nUid: x\n")
    assert status[b"Tgid"] == [5] and status[b"NSpid"] == [5, 1]
    assert procfs.parse_comm(b"a\n\n") == b"a\n" and procfs.parse_comm(None) is None
    assert procfs.parse_cgroup(b"0::/user.slice\n") == ("", "/user.slice")
    assert procfs.parse_ns_link("mnt:[4026531841]") == 4026531841
    assert procfs.parse_ns_link(None) is None


def test_a_process_read_under_a_root(tmp_path):
    fake_proc(tmp_path, 4242, threads=(4243,))
    proc = procfs.ProcFS(str(tmp_path))
    info = proc.process(4242)
    assert (info.ppid, info.uid, info.euid, info.suid, info.fsuid) == (1, 1000, 1001, 1002, 1003)
    assert (info.gid, info.egid, info.ns_pid, info.ns_ppid) == (10, 11, 7, None)
    assert info.container_id == "a" * 64 and info.cmdline == b"./miner --pool x"
    assert (info.mnt_ns, info.pid_ns, info.exe) == (4026531841, 4026531836, b"/usr/bin/miner")
    assert proc.process(4242, start_ticks=999) is None          # another process's pid
    thread = proc.thread(4242)
    assert thread.tgid == 4242 and thread.comm == b"x) (y" and thread.ns_tid == 7
    tasks = proc.snapshot_tasks()
    assert sorted((t.tid, t.tgid, t.comm) for t in tasks) == [(4242, 4242, b"x) (y"),
                                                           (4243, 4242, b"x) (y")]


def test_zombies_and_vanished_tasks_are_gone(tmp_path):
    fake_proc(tmp_path, 10, state=b"Z")
    proc = procfs.ProcFS(str(tmp_path))
    assert proc.process(10) is None and proc.thread(10) is None and not proc.alive(10)
    assert proc.process(11) is None and proc.snapshot_tasks() == []


def test_an_exiting_process_without_its_memory_is_gone(tmp_path):
    """Between exit_mm() and turning zombie a task still reads as running, but its cmdline
    is empty and its exe link is gone: half a process is not reported as a process."""
    base = fake_proc(tmp_path, 20)
    (base / "cmdline").write_bytes(b"")
    os.unlink(str(base / "exe"))
    assert procfs.ProcFS(str(tmp_path)).process(20) is None
    (base / "cmdline").write_bytes(b"./miner\0")        # memory there, exe unreadable: kept
    info = procfs.ProcFS(str(tmp_path)).process(20)
    assert info.cmdline == b"./miner" and info.exe is None


def test_cache_refuses_a_process_that_started_after_the_call(tmp_path):
    fake_proc(tmp_path, 300, start=500)
    cache = ProcCache(procfs.ProcFS(str(tmp_path)), cgroup_root="")
    started = procfs.ticks_to_ns(500)
    assert cache.details(300, before_ns=started - 10 ** 9) is None   # the pid was reused
    assert cache.details(300, before_ns=started + 10 ** 9).process.uid == 1000
    assert cache.details(300, start_ns=started).start_ns == started
    assert cache.details(300, start_ns=started + 10 ** 9) is None
    assert cache.gone == 1 and cache.reads == 1          # one reading decided all four


def test_live_details_add_namespaces_and_start_times(tmp_path):
    fake_proc(tmp_path, 300, ppid=1, start=500)
    fake_proc(tmp_path, 1, start=1)
    live = LiveDetails(ProcCache(procfs.ProcFS(str(tmp_path)), cgroup_root=""),
                       boot_epoch_ns=10 ** 18)
    process = Process(pid=300, ppid=1, comm="miner")
    made = live(process, 10 ** 18 + procfs.ticks_to_ns(600))
    assert (made.ns_pid, made.container_id, made.mnt_ns) == (7, "a" * 64, 4026531841)
    assert made.start_time == 10 ** 18 + procfs.ticks_to_ns(500)
    assert made.parent_start_time == 10 ** 18 + procfs.ticks_to_ns(1)
    assert live(process, 10 ** 18 + procfs.ticks_to_ns(600)) is made     # shared
    early = live(process, 10 ** 18 + procfs.ticks_to_ns(100))            # before it lived
    assert early is process and early.ns_pid is None


def test_the_live_host_proc_matches_os():
    proc = hold(b"a\n\n")                                 # a comm that ends in newlines
    try:
        thread = procfs.PROC.thread(proc.pid)
        assert thread.comm == b"a\n\n" and thread.tgid == proc.pid
        info = procfs.PROC.process(proc.pid)
        assert info.ppid == os.getpid() and info.uid == os.getuid()
        assert info.exe == os.path.realpath(sys.executable).encode()
        assert b"-c" in info.cmdline
    finally:
        proc.kill()
        proc.wait()
    assert procfs.PROC.process(proc.pid) is None


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="no /proc")
def test_snapshot_of_this_host_holds_this_thread():
    tasks = procfs.PROC.snapshot_tasks()
    mine = [t for t in tasks if t.tid == os.getpid()]
    assert mine and mine[0].tgid == os.getpid() and mine[0].exe
