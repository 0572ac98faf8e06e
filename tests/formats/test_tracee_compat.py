"""Issue #18: what ``-f tracee`` emits is an event Tracee v0.24.1 could have printed and
its decoder takes unchanged (tests/tracee_rules.py holds its rules): every capture
fixture replayed through the CLI, events as each backend builds them live (this host's
/proc for what only the live process tells), and any values the model can hold."""

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from conftest import CAPTURES, ROOT
from mlockaudit import procfs, syscalls
from mlockaudit.enrich import LiveDetails, ProcCache
from mlockaudit.event import MAX_TIMESTAMP_NS, Event, Process
from mlockaudit.formats.entity_ids import entity_id, murmur3_32
from mlockaudit.formats.tracee import format_event, tracee_type
from mlockaudit.host import boot_epoch_ns
from mlockaudit.replay import replay
from tracee_rules import ARGS, EVENT_IDS, hash_task_id, parse, violations


def assert_tracee(line):
    assert violations(line) == [], line
    return parse(line)


# -- the types ------------------------------------------------------------------------

@pytest.mark.parametrize("c_type,kind", [
    ("const void*", "trace.Pointer"), ("void*", "trace.Pointer"),
    ("const struct rlimit*", "trace.Pointer"), ("const struct rlimit64*", "trace.Pointer"),
    ("struct rlimit64*", "trace.Pointer"), ("struct shmid_ds*", "trace.Pointer"),
    ("size_t", "uint64"), ("unsigned long", "uint64"), ("int", "int32"), ("pid_t", "int32"),
    ("off_t", "int64"), ("long", "int64"), ("unsigned int", "uint32"),
])
def test_tracee_type_of_each_c_type(c_type, kind):
    assert tracee_type(c_type) == kind


def test_a_c_type_without_a_tracee_type_is_refused():
    with pytest.raises(ValueError):
        tracee_type("struct rlimit")


def test_every_call_has_tracees_argument_names_and_types():
    """Whatever calls syscalls.ARG_SPECS lists (the mlock family, and mmap, shmctl,
    setrlimit, prlimit64 when they are added), Tracee's core.go has them the same."""
    for name, specs in syscalls.ARG_SPECS.items():
        assert tuple((arg, tracee_type(c_type)) for arg, c_type in specs) == ARGS[name], name


def test_event_ids_are_tracees():
    """eventId is the 64-bit arch's number, which is Tracee's id on amd64 and arm64."""
    for arch, build in (("x86_64", "amd64"), ("aarch64", "arm64"), ("i386", "amd64"),
                        ("arm", "arm64")):
        for name in syscalls.ARG_SPECS:
            assert syscalls.native_number(name, arch) == EVENT_IDS[build][name], (name, arch)


# -- entity ids -----------------------------------------------------------------------

@pytest.mark.parametrize("task_id,start_ns,expected", [
    # printed by Tracee v0.24.1's own HashTaskID, built from its source
    (4242, 1733119990123456789, 260792983),
    (1, 0, 2241331610),
    (2 ** 32 - 1, 2 ** 64 - 1, 1453872013),
])
def test_entity_id_is_tracees_hash(task_id, start_ns, expected):
    assert entity_id(task_id, start_ns) == expected == hash_task_id(task_id, start_ns)


def test_entity_id_floors_the_start_time_to_a_tenth_of_a_second():
    """So that a start time from /proc (clock ticks) names the same task as the kernel's."""
    base = 1733119990100000000
    assert entity_id(4242, base) == entity_id(4242, base + 99999999) == 260792983
    assert entity_id(4242, base + 100000000) != 260792983
    assert entity_id(None, base) is entity_id(4242, None) is entity_id(-1, base) is None


def test_murmur3_reference_vectors():
    assert murmur3_32(b"", 0) == 0
    assert murmur3_32(b"hello", 0) == 0x248BFA47
    assert murmur3_32(b"The quick brown fox jumps over the lazy dog", 0) == 0x2E4FF723


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 64 - 1))
def test_entity_id_matches_the_plain_hash(task_id, start_ns):
    assert entity_id(task_id, start_ns) == hash_task_id(task_id, start_ns)


# -- every capture fixture, as the CLI prints it ---------------------------------------

@pytest.mark.parametrize("fixture", ["auditd-raw.log", "auditd-enriched.log",
                                     "tracepoint.trace", "kprobe.trace"])
def test_every_replayed_event_is_tracees(fixture):
    out = subprocess.run([sys.executable, "-m", "mlockaudit", "replay", "-f", "tracee",
                          os.path.join(CAPTURES, fixture)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode("ascii").splitlines()
    assert len(lines) == 198
    names = set()
    for line in lines:
        event = assert_tracee(line)
        names.add(event["eventName"])
        for arg in event["args"]:                 # the hex stays, under mlockaudit
            if arg["type"] == "trace.Pointer":
                assert event["mlockaudit"][arg["name"]] == "0x%x" % arg["value"]
    assert names == set(syscalls.FAMILY)


def test_replayed_events_say_null_for_what_a_capture_does_not_tell():
    events = []
    replay(os.path.join(CAPTURES, "auditd-raw.log"), events.append)
    data = assert_tracee(format_event(events[0]))
    for key in ("threadStartTime", "cgroupId", "mountNamespace", "pidNamespace",
                "threadEntityId", "processEntityId", "parentEntityId", "container",
                "kubernetes", "matchedPolicies", "stackAddresses"):
        assert data[key] is None, key
    assert data["contextFlags"] == {"containerStarted": None, "isCompat": False}


# -- events as each backend builds them live -------------------------------------------

BOOT_EPOCH_NS = boot_epoch_ns()         # one reading, as a backend keeps one


def host_process(**changes):
    """The test process as /proc tells it (namespaces, cgroup id, start times)."""
    live = LiveDetails(ProcCache(), boot_epoch_ns=BOOT_EPOCH_NS)
    base = Process(pid=os.getpid(), ppid=os.getppid(), uid=os.getuid(), comm="pytest",
                   exe=sys.executable, hostname="node1", extra={"serial": 1})
    made = live(base, None)
    assert made.start_time is not None and made.mnt_ns is not None
    return made.replace(**changes) if changes else made


def tracefs_event(process, **changes):
    start = procfs.ticks_to_ns(procfs.PROC.thread(os.getpid()).start_ticks) + BOOT_EPOCH_NS
    fields = dict(arch="x86_64", syscall_nr=325, tid=os.getpid(), ns_tid=os.getpid(), cpu=3,
                  timestamp=start + 10 ** 9, args=(0x7F0000001000, 8192, 1), ret=0,
                  probe="tracepoint", thread_start=start)
    fields.update(changes)
    return Event("mlock2", "tracefs", process, **fields)


def test_an_audit_event_enriched_live_carries_the_hosts_facts():
    process = host_process(extra={"auid": 1000, "sessionId": 3, "keys": ["k"]})
    event = Event("mlock", "audit", process, timestamp=process.start_time + 10 ** 9,
                  arch="x86_64", syscall_nr=149, args=(0x7F0000001000, 4096), ret=-12,
                  extra={"serial": 77})
    data = assert_tracee(format_event(event))
    assert data["cgroupId"] == process.cgroup_id and data["mountNamespace"] == process.mnt_ns
    assert data["pidNamespace"] == process.pid_ns and data["processId"] == process.ns_pid
    assert data["processEntityId"] == hash_task_id(os.getpid(), process.start_time)
    assert data["parentEntityId"] == hash_task_id(os.getppid(), process.parent_start_time)
    # audit tells no thread: no thread start, no thread entity
    assert data["hostThreadId"] is data["threadStartTime"] is data["threadEntityId"] is None
    assert data["mlockaudit"]["errno"] == "ENOMEM" and data["mlockaudit"]["serial"] == 77


def test_a_tracefs_event_carries_thread_and_process_ids():
    process = host_process(extra={"identity": "stream", "procInfo": True})
    data = assert_tracee(format_event(tracefs_event(process)))
    assert data["threadEntityId"] == hash_task_id(os.getpid(), data["threadStartTime"])
    # the leader's thread is the process: Tracee gives both the same id
    assert data["processEntityId"] == data["threadEntityId"]
    assert data["processorId"] == 3 and data["args"][0] == {
        "name": "addr", "type": "trace.Pointer", "value": 0x7F0000001000}


@pytest.mark.parametrize("container_id,container,kubernetes,started", [
    ("", {}, {}, False),                      # known: on the host
    ("ab" * 32, {"id": "ab" * 32}, None, None),
    (None, None, None, None),                 # not known
])
def test_container_fields(container_id, container, kubernetes, started):
    data = assert_tracee(format_event(tracefs_event(host_process(container_id=container_id))))
    assert (data["containerId"], data["container"], data["kubernetes"]) == (
        container_id, container, kubernetes)
    assert data["contextFlags"]["containerStarted"] is started


@pytest.mark.parametrize("arch,nr,event_id,compat", [
    ("x86_64", 325, "325", False), ("i386", 376, "325", True),
    ("aarch64", 284, "284", False), ("arm", 390, "284", True), (None, None, None, None),
])
def test_compat_callers_carry_the_64_bit_id_and_is_compat(arch, nr, event_id, compat):
    for backend in ("audit", "tracefs"):
        event = tracefs_event(host_process(), arch=arch, syscall_nr=nr).replace(
            backend=backend)
        data = assert_tracee(format_event(event))
        assert data["eventId"] == event_id and data["contextFlags"]["isCompat"] is compat
        assert data["mlockaudit"]["syscallNumber"] == nr


def test_an_unknown_process_and_a_call_without_entry():
    process = Process(hostname="node1", extra={"identity": "unknown", "procInfo": False})
    event = Event("mlock2", "tracefs", process, arch="x86_64", tid=9, cpu=0,
                  args=(None, None, None), ret=-22, extra={"incomplete": True})
    data = assert_tracee(format_event(event))
    assert [arg["value"] for arg in data["args"]] == [None, None, None]
    assert [arg["type"] for arg in data["args"]] == ["trace.Pointer", "uint64", "int32"]
    assert data["mlockaudit"]["addr"] is None and data["processEntityId"] is None


# -- any values the model can hold -----------------------------------------------------

u64 = st.integers(0, 2 ** 64 - 1)
maybe = lambda strategy: st.none() | strategy          # noqa: E731
text = st.binary(max_size=20).map(lambda raw: raw.decode("utf-8", "surrogateescape"))


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(sorted(syscalls.ARG_SPECS)), backend=st.sampled_from(
    ["audit", "tracefs"]), arch=maybe(st.sampled_from(sorted(syscalls.SYSCALL_NUMBERS))),
    args=st.lists(maybe(u64), min_size=6, max_size=6), ret=maybe(st.integers(-4095, 2 ** 63 - 1)),
    tid=maybe(st.integers(1, 2 ** 22)), start=maybe(st.integers(0, MAX_TIMESTAMP_NS)),
    pid=maybe(st.integers(1, 2 ** 22)), ns=maybe(st.integers(0, 2 ** 32 - 1)),
    cgroup=maybe(u64), uid=maybe(st.integers(0, 2 ** 32 - 1)),
    container=maybe(st.sampled_from(["", "f" * 64])), comm=maybe(text), exe=maybe(text))
def test_any_event_is_tracees(name, backend, arch, args, ret, tid, start, pid, ns, cgroup, uid,
                              container, comm, exe):
    process = Process(pid=pid, ppid=pid, ns_pid=pid, ns_ppid=pid, uid=uid, comm=comm, exe=exe,
                      hostname=comm, container_id=container, start_time=start,
                      parent_start_time=start, mnt_ns=ns, pid_ns=ns, cgroup_id=cgroup,
                      extra={"proctitle": exe})
    nargs = len(syscalls.ARG_SPECS[name])
    event = Event(name, backend, process, timestamp=start, arch=arch, tid=tid, ns_tid=tid,
                  cpu=tid, args=tuple(args[:nargs]), ret=ret, thread_start=start,
                  syscall_nr=syscalls.SYSCALL_NUMBERS.get(arch, {}).get(name),
                  probe="kprobe" if backend == "tracefs" else None)
    assert_tracee(format_event(event))


# -- the rules themselves: they refuse what Tracee's decoder refused -------------------

BEFORE = ('{"timestamp":1,"processorId":null,"processId":null,"threadId":null,'
          '"parentProcessId":null,"hostProcessId":5063,"hostThreadId":null,'
          '"hostParentProcessId":5050,"userId":0,"processName":"plain","executable":'
          '{"path":"/bin/x"},"hostName":null,"containerId":null,"eventId":"325",'
          '"eventName":"mlock2","syscall":"mlock2","returnValue":0,"argsNum":3,"args":['
          '{"name":"addr","type":"const void*","value":"0x7f072befe000"},'
          '{"name":"len","type":"size_t","value":8192},'
          '{"name":"flags","type":"int","value":1}],"mlockaudit":{"arch":"x86_64"}}')


def test_the_rules_refuse_the_old_shape():
    """The line mlockaudit printed before issue #18, which Tracee's decoder rejected
    ("unrecognized argument type size_t of argument len")."""
    found = " | ".join(violations(BEFORE))
    assert "unrecognized argument type size_t" in found and "keys" in found
    assert "unrecognized argument type int" in found


@pytest.mark.parametrize("change,problem", [
    (lambda d: d["args"][2].update(value=2 ** 31), "out of range for int32"),
    (lambda d: d["args"][0].update(value=-1), "out of range for trace.Pointer"),
    (lambda d: d["args"][1].update(value=2 ** 64), "out of range for uint64"),
    (lambda d: d["args"][0].update(value="0x1000"), "not a JSON integer"),
    (lambda d: d.update(eventId=325), "not a quoted integer"),
    (lambda d: d.update(eventId="149"), "not Tracee's id"),
    (lambda d: d.update(cgroupId=-1), "cgroupId: -1 out of range"),
    (lambda d: d.update(threadEntityId=2 ** 32), "threadEntityId"),
    (lambda d: d.update(argsNum=2), "argsNum"),
    (lambda d: d.update(userId=1.5), "not an integer"),
    (lambda d: d.update(hostProcessId=True), "not an integer"),
    (lambda d: d["contextFlags"].update(isCompat=True), "isCompat"),
    (lambda d: d.pop("stackAddresses"), "keys"),
])
def test_the_rules_refuse_what_tracee_would_not_take(change, problem):
    import json
    data = parse(format_event(tracefs_event(host_process())))
    change(data)
    assert problem in " | ".join(violations(json.dumps(data)))


def test_the_rules_refuse_a_duplicate_key():
    line = format_event(tracefs_event(host_process()))
    assert "duplicate key" in violations(line[:-1] + ',"eventName":"x"}')[0]


def test_the_thread_id_memo_is_bounded():
    """A storm of short-lived threads (each its own tid and start) never grows it past
    its bound, and every line still carries the right id."""
    from mlockaudit.formats import tracee
    process = host_process()
    for tid in range(1, 5001):
        event = tracefs_event(process, tid=tid, thread_start=10 ** 18 + tid)
        assert parse(format_event(event))["threadEntityId"] == hash_task_id(tid, 10 ** 18 + tid)
        assert len(tracee._THREAD_IDS) <= 4096
