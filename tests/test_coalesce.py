"""--coalesce (coalesce.py): the first call at once, one summary per window, counts that
add up exactly to the calls, bounded open series, and every format carrying the count."""

from hypothesis import given, settings, strategies as st

from conftest import CAPTURES
from mlockaudit import syscalls
from mlockaudit.coalesce import Coalescer
from mlockaudit.event import Event, Process
from mlockaudit.pipeline import Pipeline
from mlockaudit.replay import replay

T0 = 1795715167000000000
SECOND = 1000000000


def process(pid=4000, start_time=T0 - 5 * SECOND, uid=1000, comm="storm"):
    return Process(pid=pid, ppid=1, uid=uid, comm=comm, exe="/usr/bin/storm",
                   hostname="h", start_time=start_time)


def call(proc, timestamp, name="mlock", addr=0x1000, length=4096, flags=None, ret=0, serial=None,
         tid=None):
    args = {"mlock": (addr, length), "munlock": (addr, length),
            "mlock2": (addr, length, flags or 0), "mlockall": (flags or 0,),
            "munlockall": ()}[name]
    return Event(name, "audit", proc, timestamp=timestamp, arch="x86_64",
                 syscall_nr=syscalls.SYSCALL_NUMBERS["x86_64"][name], args=args, ret=ret,
                 tid=tid if tid is not None else proc.pid,
                 extra={} if serial is None else {"serial": serial})


def counts_by_pid(records):
    total = {}
    for event in records:
        total[event.pid] = total.get(event.pid, 0) + event.extra["count"]
    return total


def test_a_storm_of_50000_identical_calls_is_two_records_whose_counts_add_up():
    out = []
    coalescer = Coalescer(out.append, 1.0, clock=lambda: T0)
    proc = process()
    for index in range(50000):           # a new address each time: not part of the key
        coalescer.feed(call(proc, T0 + index * 10000, addr=0x1000 + index * 4096, serial=index))
    assert len(out) == 1                 # the first at once, with no delay
    assert out[0].extra == {"serial": 0, "count": 1}
    assert out[0].args == (0x1000, 4096)
    coalescer.flush()
    assert len(out) == 2
    summary = out[1]
    assert summary.extra["count"] == 49999
    assert summary.extra["firstTimestamp"] == T0 + 10000           # the calls it stands for
    assert summary.extra["lastTimestamp"] == T0 + 49999 * 10000
    assert summary.extra["serial"] == 1 and summary.args == (0x1000 + 4096, 4096)
    assert counts_by_pid(out) == {proc.pid: 50000}
    assert coalescer.stats() == {"coalesced": 49999, "summaries": 1, "evicted": 0, "open": 0}


def test_the_summary_leaves_at_the_window_end_without_further_events():
    out = []
    coalescer = Coalescer(out.append, 2.0, clock=lambda: T0)
    proc = process()
    for offset in (0, 1, 2):
        coalescer.feed(call(proc, T0 + offset * 1000000))
    assert [event.extra["count"] for event in out] == [1]
    coalescer.tick(T0 + 2 * SECOND - 1)                     # the window still open
    assert len(out) == 1
    coalescer.tick(T0 + 2 * SECOND)                         # the daemon's loop tick
    assert [event.extra["count"] for event in out] == [1, 2]
    assert out[1].extra["lastTimestamp"] == T0 + 2000000
    # the next call of that key starts a new series: emitted at once
    coalescer.feed(call(proc, T0 + 3 * SECOND))
    assert [event.extra["count"] for event in out] == [1, 2, 1]
    coalescer.flush()
    assert len(out) == 3                                    # a series of one: no summary


def test_a_later_event_closes_ended_windows_too():
    out = []
    coalescer = Coalescer(out.append, 1.0, clock=lambda: 0)
    a, b = process(pid=1), process(pid=2)
    coalescer.feed(call(a, T0))
    coalescer.feed(call(a, T0 + 1))
    coalescer.feed(call(b, T0 + 2 * SECOND))                # (replay: no ticks, event time)
    assert [(event.pid, event.extra["count"]) for event in out] == [(1, 1), (1, 1), (2, 1)]


def test_what_makes_calls_the_same():
    out = []
    coalescer = Coalescer(out.append, 10.0, clock=lambda: T0)
    proc = process()
    variants = [
        call(proc, T0),
        call(proc, T0, length=8192),                        # len is part of the key
        call(proc, T0, ret=-12),                            # a failure: its errno
        call(proc, T0, ret=-1),
        call(proc, T0, name="munlock"),
        call(proc, T0, name="mlock2", flags=0),
        call(proc, T0, name="mlock2", flags=1),             # flags are
        call(proc, T0, name="mlockall", flags=3),
        call(proc, T0, name="mlockall", flags=1),
        call(process(pid=4001), T0),                        # another process
        call(process(start_time=T0 - SECOND), T0),          # the pid reused
        call(process(uid=0), T0),                           # other credentials
        call(process(comm="other"), T0),
    ]
    for event in variants:
        coalescer.feed(event)
    assert len(out) == len(variants)                        # all different: each emitted
    for event in variants:                                  # the same again: all counted
        coalescer.feed(event.replace(args=(0x9000,) + event.args[1:] if event.name in (
            "mlock", "munlock", "mlock2") else event.args, tid=event.tid + 1))
    assert len(out) == len(variants)
    coalescer.flush()
    assert len(out) == 2 * len(variants)
    assert all(event.extra["count"] == 1 for event in out)


def test_open_series_are_bounded_and_the_oldest_leave_counted():
    out = []
    coalescer = Coalescer(out.append, 60.0, max_keys=2, clock=lambda: T0)
    procs = [process(pid=pid) for pid in (1, 2, 3)]
    for proc in procs:
        for offset in range(5):
            coalescer.feed(call(proc, T0 + offset))
    # pid 1 was evicted (its summary left) when pid 3's series opened
    assert coalescer.evicted == 1
    assert [(event.pid, event.extra["count"]) for event in out] == [(1, 1), (2, 1), (1, 4), (3, 1)]
    coalescer.flush()
    assert counts_by_pid(out) == {1: 5, 2: 5, 3: 5}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 3 * SECOND),
                          st.booleans()), max_size=200),
       st.integers(1, 4))
def test_counts_always_add_up_to_the_calls(steps, max_keys):
    out = []
    coalescer = Coalescer(out.append, 1.0, max_keys=max_keys, clock=lambda: T0)
    procs = [process(pid=pid) for pid in range(4)]
    fed = {}
    now = T0
    for pid, kind, delay, tick in steps:
        now += delay // 10
        if tick:
            coalescer.tick(now)
        coalescer.feed(call(procs[pid], now, length=4096 * (kind + 1)))
        fed[pid] = fed.get(pid, 0) + 1
    coalescer.flush()
    assert counts_by_pid(out) == fed
    assert all(event.extra["count"] >= 1 for event in out)


def test_a_replayed_capture_coalesces_to_the_same_number_of_calls():
    plain = []
    replay(CAPTURES + "/auditd-raw.log", plain.append)
    out = []
    pipeline = Pipeline(out.append, coalesce=5.0)
    replay(CAPTURES + "/auditd-raw.log", pipeline.emit)
    pipeline.flush()
    assert sum(event.extra["count"] for event in out) == len(plain)
    stats = pipeline.stats()
    firsts = len(out) - stats["summaries"]
    assert stats["coalesced"] == len(plain) - firsts > 0


def test_the_daemons_tick_sends_the_summary_and_the_stop_line_counts(tmp_path):
    """start's wiring without a kernel: the Daemon's pipeline (pipeline.py) in front of
    real outputs; its loop tick alone sends a summary whose window has ended."""
    import json
    from mlockaudit.compat import time_ns
    from mlockaudit.daemon import Daemon
    from mlockaudit.outputs import Outputs
    path = tmp_path / "out.jsonl"
    options = {"coalesce": 1.0, "outputs": ["file:%s" % path], "format_name": "tracee"}
    daemon = Daemon(options, lambda o: Outputs(o["outputs"], o["format_name"]))
    emit = daemon._emit_for(daemon.outputs, daemon.filter)
    proc = process()
    start = time_ns() - 3 * SECOND              # a window that has ended by now
    for index in range(5):
        emit(call(proc, start + index))
    emit(call(proc, start, name="mlockall", flags=3))          # fires mlockall-future
    daemon._tick()
    daemon.outputs.close()
    with open(str(path)) as handle:
        docs = [json.loads(line) for line in handle]
    calls = [doc for doc in docs if doc["eventName"] != "detection"]
    assert [doc["mlockaudit"]["count"] for doc in calls] == [1, 1, 4]
    assert [doc["mlockaudit"]["detection"]["id"] for doc in docs
            if doc["eventName"] == "detection"] == ["mlockall-future"]
    assert daemon._pipeline_stats() == {"coalesced": 4, "summaries": 1, "detections": 1,
                                        "detection_evicted": 0}
