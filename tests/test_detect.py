"""Detections (detect.py, the shipped detections.toml): what fires, what does not, the
user file, bounded state, and where they sit in the pipeline.

setrlimit, prlimit64 and mmap are not in syscalls.ARG_SPECS yet (another change adds them
with Tracee's argument names); these tests add them for their own duration with
monkeypatch, so the rules are checked against the names they will have."""

import os

import pytest

from mlockaudit import syscalls
from mlockaudit.daemon import make_filter
from mlockaudit.detect import Detector, RuleError, load_rules, parse_rules, shipped_text
from mlockaudit.event import Event, Process
from mlockaudit.pipeline import Pipeline

from conftest import ROOT

T0 = 1795715167000000000
SECOND = 1000000000
MIB = 1 << 20
RLIMIT_MEMLOCK = 8
RLIMIT_NOFILE = 7


@pytest.fixture
def surface(monkeypatch):
    """The locking surface's calls, with Tracee's names (pkg/events/core.go)."""
    monkeypatch.setitem(syscalls.ARG_SPECS, "setrlimit",
                        (("resource", "int"), ("rlim", "const struct rlimit64*")))
    monkeypatch.setitem(syscalls.ARG_SPECS, "prlimit64",
                        (("pid", "pid_t"), ("resource", "int"),
                         ("new_limit", "const struct rlimit64*"),
                         ("old_limit", "struct rlimit64*")))
    monkeypatch.setitem(syscalls.ARG_SPECS, "mmap",
                        (("addr", "void*"), ("length", "size_t"), ("prot", "int"),
                         ("flags", "int"), ("fd", "int"), ("off", "off_t")))


def proc(pid=5000, uid=1000, exe="/usr/local/bin/xmrig", comm="xmrig", start_time=T0 - SECOND):
    return Process(pid=pid, ppid=1, uid=uid, comm=comm, exe=exe, hostname="h",
                   start_time=start_time)


def ev(process, name, args, timestamp=T0, ret=0, serial=None):
    return Event(name, "audit", process, timestamp=timestamp, arch="x86_64", args=args,
                 ret=ret, tid=process.pid, extra={} if serial is None else {"serial": serial})


def mlock(process, length, timestamp=T0, ret=0, serial=None, addr=0x7F0000000000):
    return ev(process, "mlock", (addr, length), timestamp, ret, serial)


def setrlimit(process, resource=RLIMIT_MEMLOCK, timestamp=T0, ret=0, serial=None):
    return ev(process, "setrlimit", (resource, 0x7FFC0000), timestamp, ret, serial)


def prlimit64(process, resource=RLIMIT_MEMLOCK, new_limit=0x7FFC0000, timestamp=T0, ret=0):
    return ev(process, "prlimit64", (0, resource, new_limit, 0), timestamp, ret)


def mlockall(process, flags, timestamp=T0, ret=0):
    return ev(process, "mlockall", (flags,), timestamp, ret)


def run(events, rules=None, **kwargs):
    out = []
    detector = Detector(load_rules() if rules is None else rules, out.append, **kwargs)
    for event in events:
        detector.feed(event)
    return out, detector


def fired(out):
    return [event.extra["detection"]["id"] for event in out]


def test_the_shipped_rules_are_rules_detections_toml():
    with open(os.path.join(ROOT, "rules", "detections.toml")) as handle:
        assert handle.read() == shipped_text()
    assert [rule.id for rule in load_rules()] == [
        "memlock-raise-then-lock", "mlockall-future", "large-lock", "lock-storm"]


def test_raise_then_lock_fires_with_both_calls(surface):
    p = proc()
    out, _ = run([setrlimit(p, serial=10), mlock(p, 2 * MIB, T0 + SECOND, serial=11)])
    assert fired(out) == ["memlock-raise-then-lock"]
    detection = out[0]
    assert detection.name == "detection" and detection.process is p
    assert detection.timestamp == T0 + SECOND and detection.args == () and detection.ret is None
    assert detection.extra["detection"] == {
        "id": "memlock-raise-then-lock", "title": "RLIMIT_MEMLOCK raised, then 1 MiB or more locked",
        "severity": "high",
        "calls": [{"name": "setrlimit", "timestamp": T0, "serial": 10, "outcome": "success"},
                  {"name": "mlock", "timestamp": T0 + SECOND, "serial": 11,
                   "outcome": "success"}]}


@pytest.mark.parametrize("lock", [
    lambda p, t: ev(p, "mlock2", (0x1000, MIB, 0), t),                    # exactly 1 MiB
    lambda p, t: ev(p, "mmap", (0, 4 * MIB, 3, 0x2022, -1 & 0xFFFFFFFF, 0), t),  # MAP_LOCKED
])
def test_raise_then_lock_reads_each_calls_size_by_name(surface, lock):
    p = proc()
    out, _ = run([prlimit64(p), lock(p, T0 + 1)])
    assert fired(out) == ["memlock-raise-then-lock"]


@pytest.mark.parametrize("events", [
    lambda p, q: [setrlimit(p, resource=RLIMIT_NOFILE), mlock(p, 2 * MIB, T0 + 1)],
    lambda p, q: [setrlimit(p), mlock(p, MIB - 4096, T0 + 1)],            # too small
    lambda p, q: [setrlimit(p), mlock(p, 2 * MIB, T0 + 61 * SECOND)],     # beyond the window
    lambda p, q: [setrlimit(p), mlock(q, 2 * MIB, T0 + 1)],               # another process
    lambda p, q: [mlock(p, 2 * MIB), setrlimit(p, timestamp=T0 + 1)],     # the wrong order
    lambda p, q: [setrlimit(p, ret=-1), mlock(p, 2 * MIB, T0 + 1)],       # the raise failed
    lambda p, q: [setrlimit(p), mlock(p, 2 * MIB, T0 + 1, ret=-12)],      # the lock failed
    lambda p, q: [prlimit64(p, new_limit=0), mlock(p, 2 * MIB, T0 + 1)],  # only read it
])
def test_raise_then_lock_does_not_fire_otherwise(surface, events):
    out, _ = run(events(proc(), proc(pid=5001)))
    assert fired(out) == []


def test_the_same_pid_reused_is_another_process(surface):
    p, reused = proc(), proc(start_time=T0)
    out, _ = run([setrlimit(p), mlock(reused, 2 * MIB, T0 + 1)])
    assert fired(out) == []


def test_a_start_time_learnt_late_is_the_same_process(surface):
    """/proc read after the first call (tracefs, a short-lived process): still one."""
    unknown, known = proc(start_time=None), proc()
    assert fired(run([setrlimit(unknown), mlock(known, 2 * MIB, T0 + 1)])[0]) == [
        "memlock-raise-then-lock"]
    assert fired(run([setrlimit(known), mlock(unknown, 2 * MIB, T0 + 1)])[0]) == [
        "memlock-raise-then-lock"]


def test_mlockall_future_fires_even_when_it_failed():
    out, _ = run([mlockall(proc(), 3)])
    assert fired(out) == ["mlockall-future"]
    out, _ = run([mlockall(proc(), 2, ret=-12)])
    assert fired(out) == ["mlockall-future"]
    assert out[0].extra["detection"]["calls"][0]["outcome"] == "failure"


def test_mlockall_future_allowlist_and_current_only():
    assert fired(run([mlockall(proc(), 1)])[0]) == []                    # MCL_CURRENT only
    assert fired(run([mlockall(proc(exe="/usr/sbin/cryptsetup"), 3)])[0]) == []


def test_large_lock_is_more_than_64_mib_by_a_non_root_uid():
    assert fired(run([mlock(proc(), 64 * MIB + 4096)])[0]) == ["large-lock"]
    assert fired(run([mlock(proc(), 64 * MIB)])[0]) == []
    assert fired(run([mlock(proc(uid=0), 128 * MIB)])[0]) == []
    assert fired(run([mlock(proc(uid=None), 128 * MIB)])[0]) == []       # unknown uid: no


def test_a_32_kib_key_store_lock_fires_nothing(surface):
    p = proc(exe="/usr/bin/ssh-agent", comm="ssh-agent")
    out, _ = run([mlock(p, 32 * 1024), ev(p, "munlock", (0x7F0000000000, 32 * 1024), T0 + 1)])
    assert out == []


def test_lock_storm_fires_once_above_the_rate():
    p = proc()
    calls = [mlock(p, 4096, T0 + index * 100000, addr=index * 4096) for index in range(1000)]
    assert fired(run(calls)[0]) == []                                    # 1000 in 0.1 s: at
    calls = [mlock(p, 4096, T0 + index * 100000) for index in range(50000)]   # 10,000/s
    out, _ = run(calls)
    assert fired(out) == ["lock-storm"]                                  # cooldown: once
    detection = out[0].extra["detection"]
    assert detection["count"] == 1001
    assert [call["timestamp"] for call in detection["calls"]] == [T0, T0 + 1000 * 100000]
    slow = [mlock(p, 4096, T0 + index * 2000000) for index in range(5000)]   # 500/s
    assert fired(run(slow)[0]) == []


def test_user_rules_add_replace_and_disable(tmp_path):
    user = tmp_path / "mine.toml"
    user.write_text(u'''
[[rule]]
id = "large-lock"
title = "More than 1 MiB"
severity = "high"
type = "match"
calls = ["mlock", "mlock2"]
more_than_bytes = 1048576

[[rule]]
id = "mlockall-future"
enabled = false

[[rule]]
id = "munlockall-by-root"
title = "munlockall by root"
type = "match"
calls = ["munlockall"]
''')
    rules = load_rules(str(user))
    assert [rule.id for rule in rules] == ["memlock-raise-then-lock", "large-lock", "lock-storm",
                                           "munlockall-by-root"]
    out, _ = run([mlock(proc(uid=0), 2 * MIB), mlockall(proc(), 3),
                  ev(proc(uid=0), "munlockall", ())], rules)
    assert fired(out) == ["large-lock", "munlockall-by-root"]
    assert out[0].extra["detection"]["severity"] == "high"
    assert load_rules(str(user), shipped=False)[0].id == "large-lock"


@pytest.mark.parametrize("text, words", [
    (u'[[rule]]\nid = "x"\ntype = "match"\nbogus = 1\n', "rule 'x': unknown key(s) bogus"),
    (u'[[rule]]\nid = "x"\ntype = "often"\n', "type must be one of"),
    (u'[[rule]]\nid = "x"\ntype = "match"\nseverity = "huge"\n', "severity must be"),
    (u'[[rule]]\nid = "x"\ntype = "match"\nflags_all = ["MCL_PAST"]\n', "unknown flag"),
    (u'[[rule]]\nid = "x"\ntype = "sequence"\n', "needs the table [rule.first]"),
    (u'[[rule]]\nid = "x"\ntype = "rate"\n', "max_calls must be a whole number"),
    (u'[[rule]]\nid = "x"\ntype = "match"\n[[rule]]\nid = "x"\ntype = "match"\n', "twice"),
    (u'rule = 3\n', "rules are [[rule]] tables"),
    (u'[[rule]\n', "is not valid TOML"),
])
def test_a_bad_rule_file_says_which_rule_and_why(text, words):
    with pytest.raises(RuleError) as info:
        parse_rules(text, "mine.toml")
    assert words in str(info.value) and "mine.toml" in str(info.value)


def test_process_state_is_bounded_and_evictions_counted(surface):
    procs = [proc(pid=pid) for pid in (1, 2, 3)]
    events = [setrlimit(p) for p in procs] + [mlock(p, 2 * MIB, T0 + 1) for p in procs[::-1]]
    out, detector = run(events, max_processes=2)
    # pid 1's pending raise was forgotten when pid 3 came; 3 and 2 still fire
    assert [event.pid for event in out] == [3, 2]
    assert detector.evicted == 2          # (pid 1 when pid 3 came, pid 3 when 1 came back)
    assert detector.stats() == {"detections": 2, "detection_evicted": detector.evicted}


def test_detections_see_every_call_before_filters_and_coalescing(surface):
    out = []
    pipeline = Pipeline(out.append, make_filter({"failures_only": True}), coalesce=1.0,
                        rules=load_rules(), own_pid=1)
    p = proc()
    pipeline.emit(setrlimit(p))                                   # filtered out: a success
    for index in range(2000):
        pipeline.emit(mlock(p, 2 * MIB, T0 + 1 + index, ret=-12 if index % 2 else 0))
    pipeline.flush()
    assert sorted(fired([e for e in out if e.name == "detection"])) == [
        "lock-storm", "memlock-raise-then-lock"]
    calls = [e for e in out if e.name != "detection"]
    assert all(e.ret == -12 for e in calls)                       # the filter still applies
    assert sum(e.extra["count"] for e in calls) == 1000           # and coalescing, exactly
    assert pipeline.stats()["detections"] == 2


def test_the_tracer_itself_never_fires():
    out = []
    pipeline = Pipeline(out.append, rules=load_rules(), own_pid=5000)
    pipeline.emit(mlockall(proc(pid=5000), 3))
    assert out and not [e for e in out if e.name == "detection"]
