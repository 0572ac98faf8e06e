"""Every format carries the surface's decoded facts (MAP_*/PROT_* names, lockedLength,
the shmctl command, the resource, newLimit null) and its action; hostile values (huge
registers, unknown arguments, a hostile comm) never break or forge a record."""

import json

import pytest

from mlockaudit.event import Event, Process
from mlockaudit.formats import cef, ecs, leef, tracee

HOSTILE = Process(pid=7, comm='x" ^|=\n\\}', exe="/tmp/a\x00b")


def events():
    return [
        Event("mmap", "tracefs", HOSTILE, args=(0, 8192, 3, 0x2022, 2 ** 64 - 1, 0),
              ret=0x7F0000001000, arch="x86_64", syscall_nr=9, tid=8, probe="tracepoint"),
        Event("shmctl", "audit", HOSTILE, args=(5, 12, None), ret=-1, arch="i386",
              syscall_nr=117),
        Event("setrlimit", "audit", HOSTILE, args=(8, 2 ** 64 - 1), ret=0, arch="x86_64",
              syscall_nr=160),
        Event("prlimit64", "tracefs", HOSTILE, args=(2 ** 64 - 1, 8, 0x7FFD, None), ret=None,
              arch="x86_64", syscall_nr=302, extra={"exitTraced": False}),
        Event("mmap", "audit", HOSTILE, args=(None,) * 6, ret=None),
    ]


def test_tracee_carries_args_and_decoded_facts():
    docs = [json.loads(tracee.format_event(e)) for e in events()]
    mmap = docs[0]
    assert [(a["name"], a["type"], a["value"]) for a in mmap["args"]] == [
        ("addr", "trace.Pointer", 0), ("length", "uint64", 8192), ("prot", "int32", 3),
        ("flags", "int32", 0x2022), ("fd", "int32", -1), ("off", "int64", 0)]
    assert mmap["mlockaudit"]["addr"] == "0x0"          # the hex, for people who read it
    assert mmap["mlockaudit"]["flags"] == "MAP_PRIVATE|MAP_ANONYMOUS|MAP_LOCKED"
    assert mmap["mlockaudit"]["protNames"] == "PROT_READ|PROT_WRITE"
    assert mmap["mlockaudit"]["lockedLength"] == 8192 and mmap["eventId"] == "9"
    assert docs[1]["mlockaudit"]["command"] == "SHM_UNLOCK" and docs[1]["mlockaudit"]["errno"] == "EPERM"
    assert docs[1]["args"][2]["value"] is None and docs[1]["eventId"] == "31"
    assert docs[2]["mlockaudit"]["resourceName"] == "RLIMIT_MEMLOCK"
    assert docs[2]["mlockaudit"]["newLimit"] is None
    assert docs[2]["args"][1] == {"name": "rlim", "type": "trace.Pointer",
                                  "value": 0xffffffffffffffff}
    assert docs[2]["mlockaudit"]["rlim"] == "0xffffffffffffffff"
    assert docs[3]["args"][0]["value"] == -1 and docs[3]["mlockaudit"]["exitTraced"] is False
    assert docs[3]["returnValue"] is None
    assert docs[4]["mlockaudit"]["lockedLength"] is None
    for doc in docs:
        assert doc["processName"] == HOSTILE.comm


def test_ecs_action_per_call_and_decoded_members():
    docs = [json.loads(ecs.format_event(e)) for e in events()]
    assert [d["event"]["action"] for d in docs] == [
        "locked-memory", "unlocked-memory", "changed-memlock-limit", "changed-memlock-limit",
        "locked-memory"]
    assert docs[0]["mlockaudit"]["flagNames"] == "MAP_PRIVATE|MAP_ANONYMOUS|MAP_LOCKED"
    assert docs[0]["mlockaudit"]["lockedLength"] == 8192
    assert docs[1]["mlockaudit"]["command"] == "SHM_UNLOCK"
    assert docs[3]["mlockaudit"]["resourceName"] == "RLIMIT_MEMLOCK"
    lock = events()[1].replace(args=(5, 11, None))
    assert json.loads(ecs.format_event(lock))["event"]["action"] == "locked-memory"


@pytest.mark.parametrize("module", [cef, leef])
def test_line_formats_carry_them_in_one_line(module):
    lines = [module.format_event(e) for e in events()]
    assert all("\n" not in line and "\r" not in line for line in lines)
    assert "MAP_LOCKED" in lines[0] and "lockedLength" in lines[0]
    assert "SHM_UNLOCK" in lines[1] and "unlocked-memory" in lines[1]
    assert "RLIMIT_MEMLOCK" in lines[2] and "changed-memlock-limit" in lines[2]
    if module is cef:
        assert lines[0].count(" msg=") == 1
        assert lines[0].split("|", 7)[7].startswith("act=locked-memory ")  # header intact
    else:
        head, _, attributes = lines[0].partition("|^|")
        assert "MAP_PRIVATE,MAP_ANONYMOUS,MAP_LOCKED" in attributes and "|" not in attributes


def test_syslog_structured_data_carries_the_action_and_decoded_facts():
    from mlockaudit.transports.rfc5424 import Framer
    framer = Framer("tcp", pen=32473, hostname="h")
    sd = framer.structured_data(events()[0], 1)
    assert ' event="mmap"' in sd and ' action="locked-memory"' in sd
    assert ' flagNames="MAP_PRIVATE|MAP_ANONYMOUS|MAP_LOCKED"' in sd
    assert ' lockedLength="8192"' in sd and sd.endswith("]") and sd.count("]") == 2
    shm = framer.structured_data(events()[1], 2)
    assert ' action="unlocked-memory"' in shm and ' command="SHM_UNLOCK"' in shm
    family = framer.structured_data(Event("mlock", "audit", HOSTILE, args=(1, 2), ret=0), 3)
    assert "action=" not in family                     # (the family's SD is unchanged)


def test_prlimit64s_target_pid_is_not_the_callers_pid_in_the_line_formats():
    """prlimit64's first argument names another process: in LEEF's attributes and CEF's
    msg it is ``targetPid``, never a second ``pid`` that a SIEM would read as the caller."""
    from test_formats_siem import parse_cef, parse_leef
    event = Event("prlimit64", "audit", Process(pid=4242, comm="c"), args=(77, 8, 0x7FFD, 0),
                  ret=0, arch="x86_64", syscall_nr=302)
    _, attrs = parse_leef(leef.format_event(event))              # (rejects duplicate keys)
    assert attrs["pid"] == "4242" and attrs["targetPid"] == "77"
    _, extension = parse_cef(cef.format_event(event))
    assert extension["spid"] == "4242" and "targetPid=77" in extension["msg"]
