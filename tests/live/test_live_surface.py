"""The memory-locking surface beyond the mlock family, live on this machine's kernel
(root), on both backends: a workload makes each locking call (mmap MAP_LOCKED, shmctl
SHM_LOCK/SHM_UNLOCK and a failing one, setrlimit and prlimit64 of RLIMIT_MEMLOCK with a
new limit) and each look-alike (plain mmap, IPC_STAT, IPC_RMID, RLIMIT_NOFILE, read-only
prlimit64, glibc getrlimit); exactly the locking calls are reported, with the true pid,
tid (tracefs), args and return value, and the filters really run in the kernel (the
rules carry a0..a3 fields, the instance's event filters hold the expressions). Rules and
instance are gone after stop."""

import os
import re
import time

import pytest

from live_helpers import TRACEFS, Tracer, audit_snapshot, our_rules, run_workload, tracefs_snapshot

pytestmark = [pytest.mark.live]

if os.geteuid() != 0:
    pytest.skip("live surface tests need root", allow_module_level=True)

SURFACE = ("mmap", "shmctl", "setrlimit", "prlimit64")


def shaped(name, args):
    """Raw register values -> the values Tracee's JSON shows for them (by Tracee's type
    for each C type: numbers, pointers included, ints signed)."""
    from mlockaudit import syscalls
    from mlockaudit.formats.tracee import VALUE_OF, tracee_type
    out = []
    for (_, c_type), raw in zip(syscalls.ARG_SPECS[name], args):
        convert = VALUE_OF[tracee_type(c_type)]
        out.append(convert(raw) if raw is not None and convert is not None else raw)
    return out


def reported(events, pid, with_tid=True):
    return sorted([((event["hostThreadId"] if with_tid else None), event["eventName"],
                    [arg["value"] for arg in event["args"]], event["returnValue"])
                   for event in events
                   if event["hostProcessId"] == pid and event["eventName"] in SURFACE],
                  key=repr)


def expected(truth, with_tid=True, audit=False):
    out = []
    for call in truth["calls"]:
        args = list(call["args"])
        if audit and call["name"] == "mmap":
            args[4:] = [None, None]               # a SYSCALL record has a0..a3 only
        out.append(((call["tid"] if with_tid else None), call["name"],
                    shaped(call["name"], args), call["ret"]))
    return sorted(out, key=repr)


def test_audit_reports_exactly_the_locking_calls(tmp_path, run_dir, audit_guard):
    tracer = Tracer(tmp_path, "--backend", "audit", run_dir=run_dir).wait_ready()
    rules = our_rules()
    conditions = sorted(tuple(rule["conditions"]) for rule in rules if rule["conditions"])
    assert ((3, "&", 0x2000),) in conditions and ((0, "==", 8),) in conditions
    assert ((1, "==", 8), (2, "!=", 0)) in conditions
    truth = run_workload(b"surf-audit", surface=True)
    time.sleep(0.3)
    assert tracer.stop() == 0, tracer.stderr
    events = tracer.events()
    assert reported(events, truth["pid"], with_tid=False) == \
        expected(truth, with_tid=False, audit=True)
    for event in events:
        if event["hostProcessId"] == truth["pid"] and event["eventName"] == "mmap":
            assert event["mlockaudit"]["flags"].endswith("MAP_LOCKED")
            assert event["mlockaudit"]["lockedLength"] == 8192
    assert audit_snapshot() == audit_guard                  # every rule gone, settings back


@pytest.mark.parametrize("probe", ["tracepoint", "kprobe"])
def test_tracefs_reports_exactly_the_locking_calls(tmp_path, run_dir, tracefs_guard, probe):
    if probe == "kprobe" and not os.path.exists(os.path.join(TRACEFS, "kprobe_events")):
        pytest.skip("no kprobe_events on this kernel")
    tracer = Tracer(tmp_path, "--backend", "tracefs", "--probe", probe,
                    run_dir=run_dir).wait_ready()
    instance = re.search(r"instance=(\S+)", tracer.stderr).group(1)
    group = "syscalls" if probe == "tracepoint" else os.path.basename(instance)
    filters = {}
    for call in SURFACE:
        event = "sys_enter_" + call if probe == "tracepoint" else call
        with open(os.path.join(instance, "events", group, event, "filter")) as handle:
            filters[call] = handle.read().strip()
    assert filters == {"mmap": "flags & 0x2000", "shmctl": "cmd == 11 || cmd == 12",
                       "setrlimit": "resource == 8",
                       "prlimit64": "resource == 8 && new_rlim != 0"}
    truth = run_workload(b"surf-" + probe.encode(), surface=True)
    time.sleep(0.5)
    assert tracer.stop() == 0, tracer.stderr
    events = tracer.events()
    assert reported(events, truth["pid"]) == expected(truth)
    ours = [e for e in events if e["hostProcessId"] == truth["pid"]]
    assert all(e["mlockaudit"].get("incomplete") is None for e in ours)
    assert all(e["mlockaudit"]["probe"] == probe for e in ours)
    assert "lost=0" in tracer.stderr
    assert tracefs_snapshot() == tracefs_guard              # instance and probes gone


def test_tracefs_mmap_exits_none(tmp_path, run_dir, tracefs_guard):
    tracer = Tracer(tmp_path, "--backend", "tracefs", "--mmap-exits", "none",
                    run_dir=run_dir).wait_ready()
    instance = re.search(r"instance=(\S+)", tracer.stderr).group(1)
    with open(os.path.join(instance, "events/syscalls/sys_exit_mmap/enable")) as handle:
        assert handle.read().strip() == "0"
    truth = run_workload(b"surf-noexit", surface=True)
    time.sleep(0.5)
    assert tracer.stop() == 0, tracer.stderr
    events = [e for e in tracer.events() if e["hostProcessId"] == truth["pid"]]
    mmaps = [e for e in events if e["eventName"] == "mmap"]
    assert len(mmaps) == 1 and mmaps[0]["returnValue"] is None
    assert mmaps[0]["mlockaudit"]["exitTraced"] is False
    others = sorted((e["eventName"], e["returnValue"]) for e in events if e["eventName"] != "mmap"
                    and e["eventName"] in SURFACE)
    assert others == sorted((c["name"], c["ret"]) for c in truth["calls"] if c["name"] != "mmap")
    assert tracefs_snapshot() == tracefs_guard
