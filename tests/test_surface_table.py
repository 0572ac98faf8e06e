"""The surface's call table (syscalls.py) and the model's view of it (event.py): the
locking predicate accepts each locking call and rejects each look-alike, numbers match
the kernels' tables, and hostile values never break a decode."""

import pytest

from mlockaudit import syscalls
from mlockaudit.event import Event, Process

LOCKING = [
    ("mmap", (0, 8192, 3, 0x2022, 2 ** 64 - 1, 0)),            # MAP_PRIVATE|ANON|LOCKED
    ("mmap", (0, 8192, 3, 0x2000, None, None)),                # audit: fd/off unknown
    ("mmap", (0, 1, 0, 2 ** 64 - 1, 0, 0)),                    # every bit, LOCKED among them
    ("shmctl", (5, 11, 0)),
    ("shmctl", (5, 12, None)),
    ("setrlimit", (8, 0x7FFD0000)),
    ("prlimit64", (0, 8, 0x7FFD0000, 0)),
    ("prlimit64", (1234, 8, 0x7FFD0000, 0x7FFD0100)),          # another process's limit
    ("prlimit64", (0, 8, 0x100000000, 0)),                     # low 32 bits zero: not NULL
    ("shmctl", (5, 11 + 2 ** 32, 0)),                           # the kernel's int: low bits
    ("setrlimit", (8 + 2 ** 40, 0x7FFD0000)),
    ("mlock", (0x1000, 4096)),
]
LOOK_ALIKES = [
    ("mmap", (0, 8192, 3, 0x22, 2 ** 64 - 1, 0)),
    ("mmap", (0, 8192, 3, (2 ** 64 - 1) & ~0x2000, 0, 0)),     # every bit but LOCKED
    ("shmctl", (5, 2, 0x7FFD0000)),                             # IPC_STAT
    ("shmctl", (5, 0, 0)),                                      # IPC_RMID
    ("shmctl", (5, 0x10B, 0)),                                  # native shmctl: -EINVAL
    ("setrlimit", (7, 0x7FFD0000)),                             # RLIMIT_NOFILE
    ("prlimit64", (0, 8, 0, 0x7FFD0000)),                       # getrlimit: a read
    ("prlimit64", (0, 7, 0x7FFD0000, 0)),
]


@pytest.mark.parametrize("name,args", LOCKING)
def test_locking_calls_are_accepted(name, args):
    assert syscalls.is_locking(name, args)


@pytest.mark.parametrize("name,args", LOOK_ALIKES)
def test_look_alikes_are_rejected(name, args):
    assert not syscalls.is_locking(name, args)


def test_arm_shmctl_strips_ipc_64_so_it_locks():
    assert syscalls.is_locking("shmctl", (5, 0x10B, 0), "arm")
    assert syscalls.is_locking("shmctl", (5, 0x10C, 0), "arm")
    assert not syscalls.is_locking("shmctl", (5, 0x102, 0), "arm")


def test_numbers_per_arch_and_names():
    assert [syscalls.SYSCALL_NUMBERS["x86_64"][n] for n in syscalls.SURFACE_EXTRA] == \
        [9, 31, 160, 302]
    assert [syscalls.SYSCALL_NUMBERS["i386"][n] for n in syscalls.SURFACE_EXTRA] == \
        [192, 396, 75, 340]
    assert [syscalls.SYSCALL_NUMBERS["aarch64"][n] for n in syscalls.SURFACE_EXTRA] == \
        [222, 195, 164, 261]
    assert [syscalls.SYSCALL_NUMBERS["arm"][n] for n in syscalls.SURFACE_EXTRA] == \
        [192, 308, 75, 369]
    assert syscalls.BY_AUDIT_NUMBER[(0x40000003, 117)] == "shmctl"       # i386 ipc()
    assert syscalls.BY_AUDIT_NUMBER.get((0xC000003E, 117)) != "shmctl"   # x86_64 setresuid
    assert syscalls.native_number("mmap", "i386") == 9                   # Tracee's id
    assert syscalls.SURFACE == syscalls.FAMILY + ("mmap", "shmctl", "setrlimit", "prlimit64")
    assert [c for _, c in syscalls.ARG_SPECS["prlimit64"]] == [
        "pid_t", "int", "const struct rlimit64*", "struct rlimit64*"]


def test_decoded_names():
    assert syscalls.decode_surface("mmap", (0, 8192, 3, 0x2022, 0, 0)) == {
        "protNames": "PROT_READ|PROT_WRITE", "flagNames": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_LOCKED",
        "lockedLength": 8192}
    assert syscalls.decode_surface("mmap", (0, 1, 0, 0x80000000 | 0x2000, 0, 0))[
        "flagNames"] == "MAP_LOCKED|0x80000000"
    assert syscalls.decode_surface("shmctl", (1, 0x10C, 0)) == {"command": "SHM_UNLOCK|IPC_64"}
    assert syscalls.decode_surface("shmctl", (1, 99, 0)) == {"command": "0x63"}
    assert syscalls.decode_surface("setrlimit", (8, 1)) == {
        "resourceName": "RLIMIT_MEMLOCK", "newLimit": None}
    assert syscalls.decode_surface("prlimit64", (0, 2 ** 64 - 1, 1, 0))["resourceName"] == \
        "0xffffffff"
    assert syscalls.decode_surface("mlock", (1, 2)) == {}


def test_actions():
    assert syscalls.action("mmap", (0, 1, 3, 0x2000)) == "locked-memory"
    assert syscalls.action("shmctl", (1, 11, 0)) == "locked-memory"
    assert syscalls.action("shmctl", (1, 12, 0)) == "unlocked-memory"
    assert syscalls.action("shmctl", (1, 0x10C, 0)) == "unlocked-memory"
    assert syscalls.action("setrlimit", (8, 1)) == "changed-memlock-limit"
    assert syscalls.action("prlimit64", (0, 8, 1, 0)) == "changed-memlock-limit"
    assert syscalls.action("munlockall", ()) == "unlocked-memory"
    assert syscalls.action("mlock", (1, 2)) == "locked-memory"


def test_arg_values_shape_every_pointer_and_hostile_values():
    process = Process(pid=1)
    event = Event("prlimit64", "audit", process, args=(2 ** 64 - 1, 2 ** 64 - 1, 2 ** 64 - 1,
                                                       None))
    assert event.arg_values() == [
        ("pid", "pid_t", -1), ("resource", "int", -1),
        ("new_limit", "const struct rlimit64*", "0xffffffffffffffff"),
        ("old_limit", "struct rlimit64*", None)]
    mmap = Event("mmap", "audit", process, args=(None,) * 6)
    assert [value for _, _, value in mmap.arg_values()] == [None] * 6
    assert mmap.decoded() == {"protNames": None, "flagNames": None, "lockedLength": None}
    assert syscalls.is_locking("mmap", (None,) * 6)              # unknown: not hidden
    # the family keeps its rendering
    mlock = Event("mlock", "audit", process, args=(0x1000, 4096))
    assert mlock.arg_values() == [("addr", "const void*", "0x1000"), ("len", "size_t", 4096)]
    assert mlock.decoded() == {}
