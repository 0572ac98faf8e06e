"""Who made each call, for processes and threads that live a millisecond and rename
themselves to hostile comms (scripts/loadgen.c burst): true tgid, tid, ppid, comm and exe
on both backends, each call checked. tracefs takes them from the trace stream itself (the
task lifecycle events), audit from its records."""

import os
import time

import pytest

from live_helpers import Tracer, build_loadgen, run_burst

pytestmark = [pytest.mark.live]

if os.geteuid() != 0:
    pytest.skip("live tests need root", allow_module_level=True)

PROCESSES = 140


def comm_of(event):
    raw = event["mlockaudit"].get("processNameHex")
    return bytes.fromhex(raw) if raw else event["processName"].encode()


@pytest.mark.parametrize("backend", ["tracefs", "audit"])
def test_short_lived_renamed_processes_and_threads(backend, tmp_path, run_dir, tracefs_guard,
                                                   audit_guard):
    loadgen = build_loadgen(tmp_path)
    tracer = Tracer(tmp_path, "--backend", backend, "--events", "mlock2",
                    run_dir=run_dir).wait_ready()
    truth, _ = run_burst(loadgen, PROCESSES)
    time.sleep(0.5)
    assert tracer.stop() == 0, tracer.stderr
    assert len(truth) == PROCESSES + (PROCESSES + 2) // 3
    pids = {call["pid"] for call in truth}
    events = [e for e in tracer.events() if e["hostProcessId"] in pids]
    got = sorted((e["hostProcessId"], e["hostThreadId"] if backend == "tracefs" else None,
                  e["hostParentProcessId"], comm_of(e), e["returnValue"]) for e in events)
    want = sorted((c["pid"], c["tid"] if backend == "tracefs" else None, c["ppid"],
                   bytes.fromhex(c["comm_hex"]), c["ret"]) for c in truth)
    assert got == want
    real = os.path.realpath(loadgen)
    for event in events:
        if backend == "tracefs":          # the exe the parent exec'd, inherited at fork
            assert event["executable"]["path"] == loadgen
            assert event["mlockaudit"]["exeSource"] == "inherited"
            assert event["mlockaudit"]["identity"] == "stream"
        else:
            assert event["executable"]["path"] == real
    assert "lost=0" in tracer.stderr
