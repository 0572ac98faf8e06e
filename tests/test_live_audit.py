"""The audit backend, live on this machine's kernel (root): every call of real workloads
arrives exactly once with true values, and the kernel's audit state is left as found:
after a normal stop, after SIGINT, after kill -9 plus cleanup, beside a real auditd."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from live import (Tracer, audit_snapshot, event_calls, kill_tracers, our_rules, run_cli,
                  run_workload, truth_calls)
from workload import HOSTILE_COMMS

pytestmark = [pytest.mark.live]

if os.geteuid() != 0:
    pytest.skip("live audit tests need root", allow_module_level=True)


@pytest.fixture
def run_dir(tmp_path):
    path = str(tmp_path / "run")
    os.makedirs(path)
    return path


@pytest.fixture
def audit_guard(run_dir):
    """Snapshot the audit state; after the test, whatever happened, make sure nothing of
    ours is left (and fail the test if the tracer itself had left something)."""
    assert not our_rules(), "the kernel holds mlockaudit rules before the test started"
    before = audit_snapshot()
    yield before
    kill_tracers()
    run_cli("cleanup", run_dir=run_dir)
    assert audit_snapshot() == before


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
        assert event["timestamp"] > time.time_ns() - 600 * 10**9
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
    assert len(our_rules()) == 3                       # the crash left its rules...
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
    assert len(our_rules()) == 3                       # only the new run's rules
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
    assert len(events) == 100000 and truth["failures"] == 0
    assert all(e["returnValue"] == 0 for e in events)
    assert "lost=0" in tracer.stderr
    print("storm: 100000 calls in %.2fs (%.0f calls/s), all delivered after %.2fs" % (
        storm_seconds, 100000 / storm_seconds, delivered_seconds))


AUDITD_CONF = """\
local_events = yes
write_logs = yes
log_file = {log}
log_format = RAW
flush = INCREMENTAL_ASYNC
freq = 50
num_logs = 3
max_log_file_action = ignore
space_left = 2
space_left_action = ignore
admin_space_left = 1
admin_space_left_action = ignore
disk_full_action = ignore
disk_error_action = ignore
plugin_dir = {plugins}
"""


@pytest.fixture
def auditd(audit_guard):
    """The real auditd (Debian's), registered as the audit daemon, logging to a temp dir."""
    if shutil.which("auditd") is None:
        pytest.fail("auditd is not installed (scripts/test installs it)")
    work = tempfile.mkdtemp(prefix="mlockaudit-auditd-")
    os.mkdir(os.path.join(work, "plugins"))
    log = os.path.join(work, "audit.log")
    with open(os.path.join(work, "auditd.conf"), "w") as handle:
        handle.write(AUDITD_CONF.format(log=log, plugins=os.path.join(work, "plugins")))
    os.chmod(os.path.join(work, "auditd.conf"), 0o640)
    daemon = subprocess.Popen(["auditd", "-n", "-s", "nochange", "-c", work],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if audit_snapshot()["pid"] == daemon.pid:
                break
            time.sleep(0.05)
        else:
            pytest.fail("auditd did not register")
        yield daemon, log
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)
        shutil.rmtree(work)


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
