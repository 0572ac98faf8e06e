"""The tracefs backend, live on this machine's kernel (syscall tracepoints; kprobes are
proven in the qemu guest): every call once with true values, hostile comms included, and
tracefs left exactly as found, after a stop, after kill -9 plus cleanup or the next start."""

import os
import signal
import sys
import time

import pytest

from live_helpers import TRACEFS, Tracer, comparable_calls, run_cli, run_workload, tracefs_snapshot
from workload import HOSTILE_COMMS

pytestmark = [pytest.mark.live]

if os.geteuid() != 0:
    pytest.skip("live tracefs tests need root", allow_module_level=True)


def test_every_call_arrives_once_with_true_values(tmp_path, run_dir, tracefs_guard):
    tracer = Tracer(tmp_path, "--backend", "tracefs", run_dir=run_dir).wait_ready()
    assert "probe=tracepoint" in tracer.stderr
    truths = [run_workload(comm, thread=(index % 3 == 0))
              for index, comm in enumerate(HOSTILE_COMMS)]
    time.sleep(0.5)
    assert tracer.stop() == 0, tracer.stderr
    events = tracer.events()
    got, want = comparable_calls(events, truths)
    assert got == want
    assert "events=%d lost=0" % len(events) in tracer.stderr
    # who made each call comes from the stream itself (task lifecycle events): the parent
    # and the executable too, whether or not the process was still there to be read
    for event in events:
        assert event["mlockaudit"]["identity"] == "stream"
        assert event["hostParentProcessId"] == os.getpid()
        assert event["executable"]["path"] == sys.executable       # as exec'd (the venv's)
        assert event["mlockaudit"]["exeSource"] == "exec"
        if event["mlockaudit"]["procInfo"]:                        # still alive when read
            assert event["userId"] == 0 and "workload.py" in event["mlockaudit"]["cmdline"]
        else:                                                      # gone: nothing guessed
            assert event["userId"] is None and event["processId"] is None
        assert event["mlockaudit"]["probe"] == "tracepoint"
        assert event["processorId"] is not None and event["timestamp"] > time.time() * 1e9 - 600e9
        assert event["mlockaudit"].get("incomplete") is None
    assert tracefs_snapshot() == tracefs_guard


def test_sigint_and_event_selection(tmp_path, run_dir, tracefs_guard):
    tracer = Tracer(tmp_path, "--backend", "tracefs", "--events", "mlockall,munlockall",
                    run_dir=run_dir).wait_ready()
    truth = run_workload(b"select")
    time.sleep(0.3)
    assert tracer.stop(signal.SIGINT) == 0
    names = sorted(event["eventName"] for event in tracer.events())
    assert names == sorted(c["name"] for c in truth["calls"]
                           if c["name"] in ("mlockall", "munlockall"))
    assert tracefs_snapshot() == tracefs_guard


def test_second_start_is_refused(tmp_path, run_dir, tracefs_guard):
    first = Tracer(tmp_path, "--backend", "tracefs", run_dir=run_dir).wait_ready()
    second = run_cli("start", "--backend", "tracefs", run_dir=run_dir)
    assert second.returncode != 0 and b"another mlockaudit is running" in second.stderr
    assert first.stop() == 0


def test_kill_9_then_cleanup_then_start(tmp_path, run_dir, tracefs_guard):
    tracer = Tracer(tmp_path, "--backend", "tracefs", run_dir=run_dir).wait_ready()
    tracer.stop(signal.SIGKILL)
    left = [n for n in os.listdir(os.path.join(TRACEFS, "instances")) if n.startswith("mlockaudit_")]
    assert len(left) == 1                                  # the crash left its instance
    result = run_cli("cleanup", run_dir=run_dir)
    assert result.returncode == 0 and b"undid a dead run" in result.stdout, result.stderr
    assert tracefs_snapshot() == tracefs_guard
    # the same crash, then a new start instead of cleanup
    Tracer(tmp_path, "--backend", "tracefs", run_dir=run_dir).wait_ready().stop(signal.SIGKILL)
    tracer = Tracer(tmp_path, "--backend", "tracefs", run_dir=run_dir).wait_ready()
    assert "cleanup of a previous run" in tracer.stderr
    assert len([n for n in os.listdir(os.path.join(TRACEFS, "instances"))
                if n.startswith("mlockaudit_")]) == 1
    assert tracer.stop() == 0


def test_stale_instance_without_state_is_found_by_name(tmp_path, run_dir, tracefs_guard):
    """State lost (another run dir): the instance is still recognised as a dead
    mlockaudit's by its name (pid + start time), and only ours are touched."""
    tracer = Tracer(tmp_path, "--backend", "tracefs", run_dir=run_dir).wait_ready()
    tracer.stop(signal.SIGKILL)
    other_dir = str(tmp_path / "other-run")
    os.makedirs(other_dir)
    os.mkdir(os.path.join(TRACEFS, "instances", "not_ours"))
    try:
        result = run_cli("cleanup", run_dir=other_dir)
        assert b"removed instance mlockaudit_" in result.stdout, result.stderr
        assert os.path.isdir(os.path.join(TRACEFS, "instances", "not_ours"))
    finally:
        os.rmdir(os.path.join(TRACEFS, "instances", "not_ours"))


@pytest.mark.slow
def test_ring_buffer_loss_is_counted_never_silent(tmp_path, run_dir, tracefs_guard):
    """A tiny buffer and an unthrottled storm: the ring buffer overwrites. Every call is
    either reported or accounted for as lost: events + lost >= calls."""
    calls = 200000
    tracer = Tracer(tmp_path, "--backend", "tracefs", "--events", "mlock2", "--buffer-kb", "64",
                    run_dir=run_dir).wait_ready()
    truth = run_workload(b"storm", storm=calls)
    time.sleep(1.0)
    assert tracer.stop() == 0, tracer.stderr
    events = [e for e in tracer.events() if e["hostProcessId"] == truth["pid"]
              or e["hostThreadId"] == truth["pid"]]
    summary = tracer.stderr.rsplit("stopped: ", 1)[1]
    lost = int(summary.split("lost=")[1].split()[0])
    complete = [e for e in events if not e["mlockaudit"].get("incomplete")]
    print("storm %d calls, buffer 64 KB/cpu: %d events (%d complete), lost=%d"
          % (calls, len(events), len(complete), lost))
    assert lost > 0                      # this buffer cannot hold the storm: loss happened
    assert len(complete) + lost >= calls  # ...and none of it is silent
    assert len(events) <= calls           # nothing invented
