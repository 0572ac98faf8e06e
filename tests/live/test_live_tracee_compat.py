"""Issue #18, live (root; touches this kernel's audit or tracefs state): every line a real
``mlockaudit start -f tracee`` writes on either backend, hostile comms and threads
included, is an event Tracee v0.24.1's decoder takes unchanged (tests/tracee_rules.py),
with the calls' true values and what the backend knows filled in."""

import os
import time

import pytest

from live_helpers import Tracer, event_calls, run_workload, truth_calls
from tracee_rules import hash_task_id, parse, violations
from workload import HOSTILE_COMMS

pytestmark = [pytest.mark.live]

if os.geteuid() != 0:
    pytest.skip("live tests need root", allow_module_level=True)


def ns_inode(name):
    return int(os.readlink("/proc/self/ns/" + name).split("[")[1].rstrip("]"))


@pytest.mark.parametrize("backend", ["tracefs", "audit"])
def test_every_live_event_is_tracees(backend, tmp_path, run_dir, tracefs_guard, audit_guard):
    tracer = Tracer(tmp_path, "--backend", backend, "-f", "tracee",
                    run_dir=run_dir).wait_ready()
    truths = [run_workload(comm, thread=(index % 3 == 0))
              for index, comm in enumerate(HOSTILE_COMMS)]
    time.sleep(0.5)
    assert tracer.stop() == 0, tracer.stderr
    with open(tracer.out_path, "rb") as handle:
        lines = handle.read().decode("ascii").splitlines()      # pure ASCII, or this fails
    assert lines
    for line in lines:                    # every line, the workload's and any other's
        assert violations(line) == [], line
    events = [parse(line) for line in lines]
    with_tid = backend == "tracefs"
    pids = {truth["pid"] for truth in truths}
    assert event_calls(events, pids, with_tid) == truth_calls(truths, with_tid)
    ours = [event for event in events if event["hostProcessId"] in pids]
    for event in ours:
        assert event["eventId"] is not None
        assert event["contextFlags"]["isCompat"] is False
        assert event["mlockaudit"]["backend"] == backend
        for arg in event["args"]:
            if arg["type"] == "trace.Pointer":
                assert event["mlockaudit"][arg["name"]] == "0x%x" % arg["value"]
        # what /proc told while the process lived is this host's (same namespaces)
        if event["mountNamespace"] is not None:
            assert event["mountNamespace"] == ns_inode("mnt")
            assert event["pidNamespace"] == ns_inode("pid")
            assert event["cgroupId"] is not None
        if backend == "tracefs":
            # the stream saw each workload thread start: its start time and Tracee's id
            assert event["threadStartTime"] is not None
            assert event["threadEntityId"] == hash_task_id(event["hostThreadId"],
                                                           event["threadStartTime"])
            assert event["processEntityId"] is not None
        else:
            # audit names no thread: nothing about one is made up
            assert event["hostThreadId"] is None and event["threadEntityId"] is None
            assert event["threadStartTime"] is None
    assert "lost=0" in tracer.stderr
