"""replay of the memory-locking surface beyond the mlock family, from the synthetic
captures in tests/fixtures/captures (see its README): exactly the locking calls come out,
with their true pid, args and return; nothing for their look-alikes."""

import os

from conftest import CAPTURES
from mlockaudit.replay import replay

POINTER = 0x7FFD10000000

# (pid, name, args, ret): the truth of surface-auditd.log. A SYSCALL record has a0..a3
# only: mmap's fd and off are unknown (None); i386's ipc(SHMCTL) carries buf in a4.
AUDIT_TRUTH = sorted([
    (6001, "mmap", (0, 0x2000, 3, 0x2022, None, None), 139668778639360),
    (6001, "shmctl", (5, 11, 0), 0),
    (6001, "shmctl", (5, 12, 0), -1),
    (6001, "setrlimit", (8, POINTER + 0x100), 0),
    (6001, "prlimit64", (0, 8, POINTER + 0x200, 0), 0),
    (6002, "shmctl", (5, 0x10B, None), 0),
    (6002, "mmap", (0, 0x1000, 3, 0x2022, None, None), 4149170176),
    (6001, "mlock", (0x7F072BEFE000, 0x1000), 0),
], key=repr)

TRACE_TRUTH = sorted([
    (7001, "mmap", (0, 0x2000, 3, 0x2022, 0xFFFFFFFFFFFFFFFF, 0), 0x7F39A3456000),
    (7001, "shmctl", (5, 11, 0), 0),
    (7001, "shmctl", (5, 12, 0), 0),
    (7001, "setrlimit", (8, POINTER + 0x100), -1),
    (7001, "prlimit64", (0, 8, POINTER + 0x200, 0), 0),
    (7001, "mlock", (0x7F39A3456000, 0x1000), 0),
], key=repr)


def _calls(events, tid=False):
    return sorted(((event.tid if tid else event.pid), event.name, tuple(event.args), event.ret)
                  for event in events)


def test_audit_log_reports_only_the_locking_calls(collect):
    events, emit = collect
    stats = replay(os.path.join(CAPTURES, "surface-auditd.log"), emit)
    assert sorted(_calls(events), key=repr) == AUDIT_TRUTH
    assert stats.rejected == {} and stats.incomplete == 0
    by_pid = {(event.pid, event.name): event for event in events}
    ipc = by_pid[(6002, "shmctl")]
    assert (ipc.arch, ipc.syscall_nr) == ("i386", 117)              # through ipc()
    assert ipc.decoded() == {"command": "SHM_LOCK|IPC_64"} and ipc.action == "locked-memory"
    mmap2 = by_pid[(6002, "mmap")]
    assert (mmap2.arch, mmap2.syscall_nr) == ("i386", 192)
    assert mmap2.decoded()["lockedLength"] == 0x1000


def test_trace_capture_reports_only_the_locking_calls(collect):
    events, emit = collect
    stats = replay(os.path.join(CAPTURES, "surface-tracepoint.trace"), emit)
    assert sorted(_calls(events, tid=True), key=repr) == TRACE_TRUTH
    # the plain mmap's lone exit is a look-alike's, not an incomplete call
    assert stats.rejected == {} and stats.incomplete == 0
    assert all(event.extra.get("incomplete") is None for event in events)
    assert {event.probe for event in events} == {"tracepoint"}


def test_event_selection_applies_to_the_surface(collect):
    events, emit = collect
    replay(os.path.join(CAPTURES, "surface-auditd.log"), emit, events=["shmctl"])
    assert sorted(event.args[1] for event in events) == [11, 12, 0x10B]
