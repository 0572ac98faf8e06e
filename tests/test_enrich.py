"""/proc enrichment of tracefs events: true values for a live process, None for a gone
one, nothing taken from a process that started after the call (a reused pid)."""

import os
import subprocess
import sys

from mlockaudit.compat import CLOCK_BOOTTIME, clock_gettime_ns
from mlockaudit.enrich import ProcEnricher, read_proc

HOLD = ("import ctypes, sys, time; ctypes.CDLL(None).prctl(15, ctypes.c_char_p(bytes.fromhex("
        "sys.argv[1])), 0, 0, 0); print('ready', flush=True); time.sleep(30)")


def hold(comm):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, comm.hex()], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    return proc


def boot_ns():
    return clock_gettime_ns(CLOCK_BOOTTIME)


def test_live_process_comm_ids_and_exe_from_proc():
    proc = hold(b"a\n\n")                                 # a comm that ends in newlines
    try:
        enricher = ProcEnricher("host", boot_ns_of_trace=lambda ts: ts)
        process, ns_tid = enricher(None, proc.pid, b"           <...>", boot_ns())
        assert process.pid == proc.pid and process.comm == "a\n\n"
        assert process.ppid == os.getpid() and process.uid == os.getuid()
        assert process.exe == os.path.realpath(sys.executable)
        assert process.container_id is not None and ns_tid == proc.pid
        assert "-c" in process.extra["cmdline"]
    finally:
        proc.kill()
        proc.wait()


def test_gone_process_gives_nulls_and_a_reused_pid_is_not_trusted():
    proc = hold(b"short")
    started = boot_ns()
    proc.kill()
    proc.wait()
    enricher = ProcEnricher("host", boot_ns_of_trace=lambda ts: ts)
    process, _ = enricher(proc.pid, proc.pid, b"           short", started)
    assert process.comm == "short" and process.uid is None and process.exe is None
    assert enricher.gone == 1
    # a call dated before our own start cannot have been made by us (pid reuse)
    info = read_proc(os.getpid())
    early = info.start_ticks * (10 ** 9 // os.sysconf("SC_CLK_TCK")) - 10 ** 9
    process, _ = ProcEnricher("host", boot_ns_of_trace=lambda ts: ts)(
        os.getpid(), os.getpid(), b"           x", early)
    assert process.uid is None and process.exe is None


def test_stale_columns_are_overruled_by_proc():
    """The tgid/comm columns come from maps that may still describe a former task with the
    same pid: a live thread's /proc entry wins, comm included."""
    proc = hold(b"true-name")
    try:
        enricher = ProcEnricher("host", boot_ns_of_trace=lambda ts: ts)
        process, _ = enricher(1, proc.pid, b"     former-task", boot_ns())
        assert process.pid == proc.pid and process.comm == "true-name"
        assert enricher.stale_columns == 1 and process.extra["procInfo"] is True
    finally:
        proc.kill()
        proc.wait()
