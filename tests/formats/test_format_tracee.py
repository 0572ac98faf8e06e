"""The tracee format: the fast template renderer must equal a plain reference rendering
(dicts + json) for every event, and hostile strings must never break a line."""

import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from conftest import CAPTURES
from tracee_rules import KEYS
from mlockaudit.compat import isascii
from mlockaudit import syscalls
from mlockaudit.event import Event, Process
from mlockaudit.formats.entity_ids import entity_id
from mlockaudit.formats.tracee import format_event
from mlockaudit.replay import replay


def shown(text):
    if text is None:
        return None
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def raw_hex(text):
    raw = text.encode("utf-8", "surrogateescape") if text is not None else b""
    try:
        raw.decode("utf-8")
        return None
    except UnicodeDecodeError:
        return raw.hex()


TRACEE_TYPES = {"const void*": "trace.Pointer", "size_t": "uint64", "int": "int32"}


def reference(event):
    """Tracee JSON of an event, written the obvious way."""
    process = event.process
    native = syscalls.native_number(event.name, event.arch)
    ext = {"backend": event.backend}
    if event.probe:
        ext["probe"] = event.probe
    ext.update({"arch": event.arch, "syscallNumber": event.syscall_nr})
    args = []
    for (name, c_type), value in zip(syscalls.ARG_SPECS[event.name], event.args):
        kind = TRACEE_TYPES[c_type]
        if value is not None and kind == "int32":
            value = value & 0xFFFFFFFF
            value = value - 2 ** 32 if value >= 2 ** 31 else value
        args.append({"name": name, "type": kind, "value": value})
        if kind == "trace.Pointer":
            ext[name] = None if value is None else hex(value)
    ext.update({"flags": syscalls.decode_flags(event.name, event.flags),
                "errno": syscalls.errno_name(event.ret)})
    for extra in (event.extra, process.extra):
        for key, value in extra.items():
            ext[key] = shown(value) if isinstance(value, str) else value
            if isinstance(value, str) and raw_hex(value):
                ext[key + "Hex"] = raw_hex(value)
    if raw_hex(process.comm):
        ext["processNameHex"] = raw_hex(process.comm)
    if raw_hex(process.exe):
        ext["executablePathHex"] = raw_hex(process.exe)
    container_id = process.container_id
    known_host = container_id == ""
    return {
        "timestamp": event.timestamp, "threadStartTime": event.thread_start,
        "processorId": event.cpu, "processId": process.ns_pid, "cgroupId": process.cgroup_id,
        "threadId": event.ns_tid, "parentProcessId": process.ns_ppid,
        "hostProcessId": process.pid, "hostThreadId": event.tid,
        "hostParentProcessId": process.ppid, "userId": process.uid,
        "mountNamespace": process.mnt_ns, "pidNamespace": process.pid_ns,
        "processName": shown(process.comm), "executable": {"path": shown(process.exe)},
        "hostName": process.hostname, "containerId": container_id,
        "container": {} if known_host else {"id": container_id} if container_id else None,
        "kubernetes": {} if known_host else None,
        "eventId": str(native) if native is not None else None, "eventName": event.name,
        "matchedPolicies": None, "argsNum": len(event.args), "returnValue": event.ret,
        "syscall": event.name, "stackAddresses": None,
        "contextFlags": {"containerStarted": False if known_host else None,
                         "isCompat": None if event.arch is None else
                         event.arch in ("i386", "arm")},
        "threadEntityId": entity_id(event.tid, event.thread_start),
        "processEntityId": entity_id(process.pid, process.start_time),
        "parentEntityId": entity_id(process.ppid, process.parent_start_time),
        "args": args,
        "mlockaudit": ext,
    }


def captured_events():
    events = []
    for name in ("auditd-raw.log", "auditd-enriched.log", "tracepoint.trace"):
        replay(os.path.join(CAPTURES, name), events.append)
    return events


def test_every_captured_event_matches_the_reference():
    events = captured_events()
    assert len(events) == 3 * 198
    for event in events:
        line = format_event(event)
        assert "\n" not in line and isascii(line)
        assert json.loads(line) == reference(event)


def test_key_order_follows_tracee():
    """json.Marshal of trace.Event writes its struct's fields in order."""
    line = format_event(captured_events()[0])
    assert tuple(json.loads(line)) == KEYS
    assert list(json.loads(line)["mlockaudit"])[:5] == [
        "backend", "arch", "syscallNumber", "addr", "flags"]


def test_unknown_values_are_null():
    event = Event("mlock2", "tracefs", Process(), args=(None, None, None),
                  extra={"incomplete": True})
    data = json.loads(format_event(event))
    assert data["returnValue"] is None and data["hostProcessId"] is None
    assert [a["value"] for a in data["args"]] == [None, None, None]
    assert data["mlockaudit"]["flags"] is None and data["mlockaudit"]["incomplete"] is True
    assert data["eventId"] is None and data["mlockaudit"]["errno"] is None


@pytest.mark.parametrize("name,args,ret,flags,errno", [
    ("mlock2", (0x1000, 4096, 1), 0, "MLOCK_ONFAULT", None),
    ("mlock2", (0x1000, 4096, 0xFFFFFFFF), -22, "MLOCK_ONFAULT|0xfffffffe", "EINVAL"),
    ("mlockall", (7,), -12, "MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT", "ENOMEM"),
    ("mlockall", (0,), -22, "0", "EINVAL"),
    ("munlockall", (), 0, None, None),
])
def test_flags_and_errno(name, args, ret, flags, errno):
    event = Event(name, "audit", Process(pid=1), arch="x86_64", args=args, ret=ret)
    data = json.loads(format_event(event))
    assert data["mlockaudit"]["flags"] == flags and data["mlockaudit"]["errno"] == errno
    assert data == reference(event)
    if name == "mlock2":
        assert data["args"][2]["value"] == (-1 if args[2] == 0xFFFFFFFF else args[2])
        assert data["args"][0]["value"] == 0x1000 and data["mlockaudit"]["addr"] == "0x1000"


@settings(max_examples=300, deadline=None)
@given(comm=st.binary(min_size=0, max_size=15), exe=st.binary(max_size=80),
       title=st.binary(max_size=128))
def test_hostile_strings_stay_inside_their_field(comm, exe, title):
    decode = lambda raw: raw.decode("utf-8", "surrogateescape")   # noqa: E731
    process = Process(pid=7, comm=decode(comm), exe=decode(exe),
                      extra={"proctitle": decode(title)})
    event = Event("mlock", "audit", process, arch="x86_64", args=(1, 2), ret=0)
    line = format_event(event)
    assert "\n" not in line and "\r" not in line and isascii(line)
    data = json.loads(line)
    assert data == reference(event)
    # the exact bytes survive: as text when valid UTF-8, else in the Hex companion
    for value, key, hex_key in ((comm, "processName", "processNameHex"),):
        hexed = data["mlockaudit"].get(hex_key)
        assert (bytes.fromhex(hexed) if hexed else data[key].encode()) == value


def test_percent_signs_in_process_strings_are_not_format_directives():
    process = Process(pid=1, comm="%s%d%%(x)s", exe="/tmp/%n%x", extra={"proctitle": "%s"})
    event = Event("mlock", "audit", process, arch="x86_64", args=(1, 2), ret=0,
                  extra={"serial": 5})
    data = json.loads(format_event(event))
    assert data["processName"] == "%s%d%%(x)s" and data["executable"]["path"] == "/tmp/%n%x"
    assert data == reference(event)
