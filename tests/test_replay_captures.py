"""replay on captures recorded from this machine's real kernel (scripts/capture): every
call the workload made comes out exactly once, with the true pid, comm, args and return."""

import os

import pytest

from conftest import CAPTURES, expected_calls, load_truth, observed_calls
from mlockaudit.replay import replay


@pytest.mark.parametrize("name", ["auditd-raw", "auditd-enriched"])
def test_audit_log_gives_exactly_the_calls(name, collect):
    events, emit = collect
    stats = replay(os.path.join(CAPTURES, name + ".log"), emit)
    truths = load_truth(os.path.join(CAPTURES, name + ".truth.json"))
    # audit reports the thread-group id only: no thread id to compare
    assert observed_calls(events, with_tid=False) == expected_calls(truths, with_tid=False)
    assert all(event.tid is None for event in events)
    assert stats.rejected == {}
    assert stats.lines == stats.parsed + stats.skipped
    assert stats.events == len(events) and stats.incomplete == 0


def test_audit_log_carries_what_audit_knows(collect):
    events, emit = collect
    replay(os.path.join(CAPTURES, "auditd-enriched.log"), emit)
    truths = load_truth(os.path.join(CAPTURES, "auditd-enriched.truth.json"))
    pids = {truth["pid"]: truth for truth in truths}
    for event in events:
        assert event.backend == "audit" and event.arch == "x86_64"
        assert event.hostname == "capturehost"          # from node=
        assert event.uid == 0 and event.ppid is not None and event.ppid != event.pid
        assert event.exe and event.exe.startswith("/")
        assert "workload.py --comm-hex %s" % pids[event.pid]["comm_hex"] in event.process.extra["proctitle"]
        assert event.process.extra["keys"] == ["secrets-watch"]
        assert event.timestamp > 1.7e18


@pytest.mark.parametrize("probe", ["tracepoint", "kprobe"])
def test_trace_capture_gives_exactly_the_calls(probe, collect):
    """tracepoint.trace: this machine's syscall tracepoints; kprobe.trace: kprobes and
    kretprobes on Debian's 6.1 kernel under qemu (scripts/capture-kprobe)."""
    events, emit = collect
    stats = replay(os.path.join(CAPTURES, probe + ".trace"), emit)
    truths = load_truth(os.path.join(CAPTURES, probe + ".truth.json"))
    expected = expected_calls(truths)
    # a process that names itself "<...>" is indistinguishable from ftrace's "comm unknown":
    # the parser must say unknown (None), never a wrong name
    expected = sorted(((pid, tid, None if comm == b"<...>" else comm, name, args, ret)
                       for pid, tid, comm, name, args, ret in expected), key=repr)
    assert observed_calls(events) == expected
    assert stats.rejected == {} and stats.incomplete == 0
    assert stats.lines == stats.parsed + stats.skipped
    # the capture header anchors the trace clock: wall-clock timestamps, in order per thread
    assert all(event.timestamp > 1.7e18 for event in events)
    assert {event.probe for event in events} == {probe}
    assert {event.arch for event in events} == {"x86_64"}
    with open(os.path.join(CAPTURES, probe + ".trace"), "rb") as handle:
        assert stats.lines == handle.read().count(b"\n")          # (a comm may hold \r)
