"""The audit backend, live on this machine's kernel (root): every call of real workloads
arrives exactly once with true values, and the kernel's audit state is left as found:
after a normal stop, after SIGINT, after kill -9 plus cleanup, beside a real auditd."""

import os
import shutil
import signal
import subprocess
import time

import pytest

from live_helpers import (Tracer, audit_snapshot, event_calls, our_rules, run_cli, run_rule_count,
                          run_workload, truth_calls)
from workload import HOSTILE_COMMS

pytestmark = [pytest.mark.live]

if os.geteuid() != 0:
    pytest.skip("live audit tests need root", allow_module_level=True)


def test_every_call_arrives_once_with_true_values(tmp_path, run_dir, audit_guard):
    tracer = Tracer(tmp_path, "--backend", "audit", run_dir=run_dir).wait_ready()
    assert "mode=unicast" in tracer.stderr
    truths = [run_workload(comm, thread=(index % 3 == 0))
              for index, comm in enumerate(HOSTILE_COMMS)]
    time.sleep(0.3)
    assert tracer.stop() == 0, tracer.stderr
    events = tracer.events()
    pids = {truth["pid"] for truth in truths}
    assert event_calls(events, pids, with_tid=False) == truth_calls(truths, with_tid=False)
    assert "events=%d lost=0" % len(events) in tracer.stderr
    # what audit adds: the parent, the executable, credentials, the command line
    for event in events:
        assert event["hostParentProcessId"] == os.getpid()
        assert event["executable"]["path"] == os.path.realpath(shutil.which("python3") or "")\
            or event["executable"]["path"].startswith("/")
        assert "workload.py" in event["mlockaudit"]["proctitle"]
        assert event["mlockaudit"]["keys"] == ["mlockaudit"]
        assert event["timestamp"] > time.time() * 1e9 - 600 * 10**9
    # nothing of ours is left in the kernel
    assert audit_snapshot() == audit_guard
    assert not os.path.exists(os.path.join(run_dir, "state.json"))


def test_sigint_stops_cleanly_and_foreign_rules_survive(tmp_path, run_dir, audit_guard):
    foreign = ["-a", "always,exit", "-F", "arch=b64", "-S", "mlock", "-k", "othertool"]
    subprocess.run(["auditctl"] + foreign, check=True, stdout=subprocess.DEVNULL)
    try:
        with_foreign = audit_snapshot()
        tracer = Tracer(tmp_path, "--backend", "audit", "--events", "mlock2",
                        run_dir=run_dir).wait_ready()
        truth = run_workload(b"sigint")
        time.sleep(0.2)
        assert tracer.stop(signal.SIGINT) == 0
        names = {event["eventName"] for event in tracer.events()}
        assert names == {"mlock2"}
        assert len(tracer.events()) == sum(1 for c in truth["calls"] if c["name"] == "mlock2")
        assert audit_snapshot() == with_foreign          # othertool's rule is still there
    finally:
        subprocess.run(["auditctl", "-d"] + foreign[1:], check=False, stdout=subprocess.DEVNULL)


def test_second_start_is_refused(tmp_path, run_dir, audit_guard):
    first = Tracer(tmp_path, "--backend", "audit", run_dir=run_dir).wait_ready()
    second = run_cli("start", "--backend", "audit", run_dir=run_dir)
    assert second.returncode != 0
    assert b"another mlockaudit is running (pid %d)" % first.proc.pid in second.stderr
    assert b"Traceback" not in second.stderr
    assert first.stop() == 0


def test_kill_9_then_cleanup_restores_the_host(tmp_path, run_dir, audit_guard):
    tracer = Tracer(tmp_path, "--backend", "audit", run_dir=run_dir).wait_ready()
    tracer.stop(signal.SIGKILL)
    assert len(our_rules()) == run_rule_count()        # the crash left its rules...
    assert audit_snapshot() != audit_guard
    result = run_cli("cleanup", run_dir=run_dir)
    assert result.returncode == 0, result.stderr
    assert b"undid a dead run" in result.stdout
    assert audit_snapshot() == audit_guard             # ...and cleanup took them all back
    assert run_cli("cleanup", run_dir=run_dir).stdout.strip() == b"nothing to clean up"


def test_kill_9_then_next_start_cleans_up(tmp_path, run_dir, audit_guard):
    Tracer(tmp_path, "--backend", "audit", run_dir=run_dir).wait_ready().stop(signal.SIGKILL)
    tracer = Tracer(tmp_path, "--backend", "audit", run_dir=run_dir).wait_ready()
    assert "cleanup of a previous run" in tracer.stderr
    assert len(our_rules()) == run_rule_count()        # only the new run's rules
    truth = run_workload(b"after-crash")
    time.sleep(0.2)
    assert tracer.stop() == 0
    assert len(tracer.events()) == len(truth["calls"])


@pytest.mark.slow
def test_storm_of_100000_calls_all_arrive(tmp_path, run_dir, audit_guard):
    tracer = Tracer(tmp_path, "--backend", "audit", "--events", "mlock2",
                    run_dir=run_dir).wait_ready()
    started = time.monotonic()
    truth = run_workload(b"storm", storm=100000)
    storm_seconds = time.monotonic() - started
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(tracer.out_path, "rb") as handle:
            if handle.read().count(b"\n") >= 100000:
                break
        time.sleep(0.1)
    delivered_seconds = time.monotonic() - started
    assert tracer.stop() == 0
    events = [e for e in tracer.events() if e["hostProcessId"] == truth["pid"]]
    assert len(events) == 100000 and truth["failures"] == 0, tracer.stderr
    assert all(e["returnValue"] == 0 for e in events)
    assert "lost=0" in tracer.stderr
    print("storm: 100000 calls in %.2fs (%.0f calls/s), all delivered after %.2fs" % (
        storm_seconds, 100000 / storm_seconds, delivered_seconds))


def test_beside_a_real_auditd_reads_multicast(tmp_path, run_dir, auditd):
    daemon, log = auditd
    enabled_before = audit_snapshot()["enabled"]
    tracer = Tracer(tmp_path, "--backend", "audit", run_dir=run_dir).wait_ready()
    assert "mode=multicast" in tracer.stderr
    truths = [run_workload(comm) for comm in HOSTILE_COMMS[:6]]
    time.sleep(0.5)
    assert tracer.stop() == 0, tracer.stderr
    pids = {truth["pid"] for truth in truths}
    assert event_calls(tracer.events(), pids, with_tid=False) == truth_calls(truths, with_tid=False)
    after = audit_snapshot()
    assert after["pid"] == daemon.pid                 # auditd was not disturbed
    assert after["enabled"] == enabled_before and not our_rules()
    time.sleep(0.5)
    with open(log, "rb") as handle:                   # and it logged the same calls
        assert handle.read().count(b'key="mlockaudit"') >= len(truth_calls(truths))
