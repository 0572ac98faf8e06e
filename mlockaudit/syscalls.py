"""The one table of the memory-locking surface: the mlock family and the calls that lock
memory too or change how much may be locked (mmap with MAP_LOCKED, shmctl SHM_LOCK and
SHM_UNLOCK, setrlimit/prlimit64 of RLIMIT_MEMLOCK): syscall numbers per architecture,
audit arch ids, flag bits, the "is this call a locking one" predicate and errno names.

Everything that turns a number from the kernel into a name goes through here, so audit
records (which carry ``arch=`` and ``syscall=``), tracefs events (which carry the name),
the audit rule compiler (which needs the numbers) and the kernel-side filters (audit
rule fields, tracefs event filters: :data:`LOCKING`) cannot disagree.
"""

import errno as _errno

#: The family, in the order Tracee lists them.
FAMILY = ("mlock", "mlock2", "munlock", "mlockall", "munlockall")
#: The rest of the surface (Tracee's event names): each is reported only when it locks or
#: changes the ability to lock (:data:`LOCKING`); their look-alikes are filtered in the
#: kernel (audit rule fields, tracefs event filters) and again by :func:`is_locking`.
SURFACE_EXTRA = ("mmap", "shmctl", "setrlimit", "prlimit64")
#: Every reportable call: the default ``--events``.
SURFACE = FAMILY + SURFACE_EXTRA

#: Tracee's argument names and C types for each call (pkg/events/core.go).
ARG_SPECS = {
    "mlock": (("addr", "const void*"), ("len", "size_t")),
    "mlock2": (("addr", "const void*"), ("len", "size_t"), ("flags", "int")),
    "munlock": (("addr", "const void*"), ("len", "size_t")),
    "mlockall": (("flags", "int"),),
    "munlockall": (),
    "mmap": (("addr", "void*"), ("length", "size_t"), ("prot", "int"), ("flags", "int"),
             ("fd", "int"), ("off", "off_t")),
    "shmctl": (("shmid", "int"), ("cmd", "int"), ("buf", "struct shmid_ds*")),
    "setrlimit": (("resource", "int"), ("rlim", "const struct rlimit*")),
    "prlimit64": (("pid", "pid_t"), ("resource", "int"), ("new_limit", "const struct rlimit64*"),
                  ("old_limit", "struct rlimit64*")),
}

#: The kernel's own argument names (SYSCALL_DEFINE in mm/mmap.c / arch/x86/kernel/
#: sys_x86_64.c, ipc/shm.c, kernel/sys.c): the syscall tracepoints' field names, which the
#: tracefs event filters must use. Same order as ARG_SPECS.
KERNEL_ARG_NAMES = {
    "mmap": ("addr", "len", "prot", "flags", "fd", "off"),
    "shmctl": ("shmid", "cmd", "buf"),
    "setrlimit": ("resource", "rlim"),
    "prlimit64": ("pid", "resource", "new_rlim", "old_rlim"),
}

MAP_LOCKED = 0x2000            # x86, arm, arm64 (asm-generic/mman.h); not on mips/ppc/sparc
SHM_LOCK, SHM_UNLOCK = 11, 12  # include/uapi/linux/shm.h
IPC_64 = 0x100                 # include/uapi/linux/ipc.h: ORed into cmd by 32-bit libcs
RLIMIT_MEMLOCK = 8             # asm-generic/resource.h (x86, arm, arm64)
SHMCTL_IPC_CALL = 24           # SHMCTL, the ipc() multiplexer's call number (linux/ipc.h)

#: The locking calls of the surface, as alternatives of (argument position, test, value):
#: a call is a locking one when every condition of one alternative holds. ``test`` is
#: "&" (some bit of value set), "==" or "!=". One audit rule and one ``||`` term of a
#: tracefs filter per alternative. shmctl's cmd is compared exactly: the direct shmctl
#: syscall (native and compat) hands cmd to ksys_shmctl unmasked, where 0x10b is -EINVAL
#: (ipc/shm.c); only the ipc() multiplexer strips IPC_64 (ipc_parse_version), see
#: :data:`IPC_LOCKING`.
LOCKING = {
    "mmap": (((3, "&", MAP_LOCKED),),),
    "shmctl": (((1, "==", SHM_LOCK),), ((1, "==", SHM_UNLOCK),)),
    "setrlimit": (((0, "==", RLIMIT_MEMLOCK),),),
    "prlimit64": (((1, "==", RLIMIT_MEMLOCK), (2, "!=", 0)),),
}
#: arm's shmctl (308) is sys_old_shmctl (arch/arm/tools/syscall.tbl; arm64's compat
#: table too), which strips IPC_64 as ipc() does: there cmd|0x100 locks too.
LOCKING_BY_ARCH = {
    ("arm", "shmctl"): tuple(((1, "==", cmd),) for cmd in (
        SHM_LOCK, SHM_UNLOCK, SHM_LOCK | IPC_64, SHM_UNLOCK | IPC_64)),
}


def locking_alternatives(name, arch=None):
    """The alternatives of LOCKING for ``name`` as called from ``arch`` (None: any arch
    but the ones LOCKING_BY_ARCH names)."""
    return LOCKING_BY_ARCH.get((arch, name)) or LOCKING.get(name)


#: i386 callers of shmctl through ipc(SHMCTL, shmid, cmd, 0, buf) (ipc/syscall.c: a0 the
#: call, a1 shmid, a2 cmd, a4 buf): ksys_old_shmctl strips IPC_64 from cmd, so 32-bit
#: glibc's cmd|0x100 locks too.
IPC_LOCKING = tuple(((0, "==", SHMCTL_IPC_CALL), (2, "==", cmd))
                    for cmd in (SHM_LOCK, SHM_UNLOCK, SHM_LOCK | IPC_64, SHM_UNLOCK | IPC_64))

#: AUDIT_ARCH_* values (include/uapi/linux/audit.h) -> our arch name.
AUDIT_ARCH = {
    0xC000003E: "x86_64",
    0x40000003: "i386",
    0xC00000B7: "aarch64",
    0x40000028: "arm",
}
ARCH_AUDIT = {name: value for value, name in AUDIT_ARCH.items()}

#: Syscall numbers per arch (arch/*/entry/syscalls/*.tbl, include/uapi/asm-generic/unistd.h).
#: 32-bit callers map with mmap2 (i386 192, arm 192: the offset in pages; the flags are
#: in the same register), reported under Tracee's name "mmap". i386's old mmap (90) takes
#: a pointer to its arguments (old_mmap): audit and tracepoints cannot see its flags, and
#: no libc uses it, so it is not in the table.
SYSCALL_NUMBERS = {
    "x86_64": {"mlock": 149, "munlock": 150, "mlockall": 151, "munlockall": 152, "mlock2": 325,
               "mmap": 9, "shmctl": 31, "setrlimit": 160, "prlimit64": 302},
    "i386": {"mlock": 150, "munlock": 151, "mlockall": 152, "munlockall": 153, "mlock2": 376,
             "mmap": 192, "shmctl": 396, "setrlimit": 75, "prlimit64": 340},
    "aarch64": {"mlock": 228, "munlock": 229, "mlockall": 230, "munlockall": 231, "mlock2": 284,
                "mmap": 222, "shmctl": 195, "setrlimit": 164, "prlimit64": 261},
    "arm": {"mlock": 150, "munlock": 151, "mlockall": 152, "munlockall": 153, "mlock2": 390,
            "mmap": 192, "shmctl": 308, "setrlimit": 75, "prlimit64": 369},
}
#: The kernel's name where it differs from the reported one (audit rules print it).
KERNEL_NAMES = {("i386", "mmap"): "mmap2", ("arm", "mmap"): "mmap2"}
#: The ipc() multiplexer (i386 only: arm EABI, x86_64 and arm64 have no ipc syscall);
#: glibc on i386 reaches shmctl through it. Reported as "shmctl".
IPC_NUMBERS = {"i386": 117}

#: The 32-bit (compat) arch that a 64-bit kernel also serves, as auditctl's b64/b32.
COMPAT_ARCH = {"x86_64": "i386", "aarch64": "arm"}

#: uname -m spellings -> our arch name.
MACHINE_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "i386": "i386", "i486": "i386",
                "i586": "i386", "i686": "i386", "aarch64": "aarch64", "arm64": "aarch64",
                "armv7l": "arm", "armv6l": "arm", "armv8l": "arm", "arm": "arm"}

#: (audit arch value, syscall number) -> event name; the audit parser's filter.
BY_AUDIT_NUMBER = {
    (ARCH_AUDIT[arch], nr): name
    for arch, table in SYSCALL_NUMBERS.items()
    for name, nr in table.items()
}
BY_AUDIT_NUMBER.update({(ARCH_AUDIT[arch], nr): "shmctl" for arch, nr in IPC_NUMBERS.items()})
#: Audit (arch, number) pairs whose arguments are ipc()'s, not shmctl's.
IPC_AUDIT_NUMBERS = frozenset((ARCH_AUDIT[arch], nr) for arch, nr in IPC_NUMBERS.items())

MLOCK_ONFAULT = 0x1
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 0x1, 0x2, 0x4
_FLAG_BITS = {
    "mlock2": ((MLOCK_ONFAULT, "MLOCK_ONFAULT"),),
    "mlockall": ((MCL_CURRENT, "MCL_CURRENT"), (MCL_FUTURE, "MCL_FUTURE"),
                 (MCL_ONFAULT, "MCL_ONFAULT")),
}


def native_number(name, arch):
    """Tracee's eventId for a syscall: its number on the 64-bit arch of the host family.

    Tracee reports compat (32-bit) callers under the 64-bit event id, so an i386 caller
    of mlock2 on x86_64 is still event 325.
    """
    native = {"i386": "x86_64", "arm": "aarch64"}.get(arch, arch)
    table = SYSCALL_NUMBERS.get(native)
    return table.get(name) if table else None


def decode_flags(name, flags):
    """``MCL_CURRENT|MCL_FUTURE`` for mlockall, ``MLOCK_ONFAULT`` for mlock2.

    Unknown bits are kept as hex (``MLOCK_ONFAULT|0x62``) so nothing is hidden; 0 is "0".
    Returns None for calls without flags or when the value is unknown.
    """
    bits = _FLAG_BITS.get(name)
    if bits is None or flags is None:
        return None
    return _bit_names(bits, flags & 0xFFFFFFFF)


def is_locking(name, args, arch=None):
    """True when a call locks memory or changes the ability to lock (see LOCKING); the
    mlock family always is. Arguments unknown (None: the entry was never seen) count as
    locking: the kernel filter let the call through, and dropping it would hide it."""
    alternatives = locking_alternatives(name, arch)
    if alternatives is None:
        return True
    specs = ARG_SPECS[name]
    for alternative in alternatives:
        for position, test, value in alternative:
            raw = args[position] if position < len(args) else None
            if raw is None:
                continue
            if specs[position][1] == "int":
                # the kernel reads an int argument from the register's low 32 bits (the
                # in-kernel filters compare the whole register: see the README's limits)
                raw &= 0xFFFFFFFF
            if not _holds(raw, test, value):
                break
        else:
            return True
    return False


def ipc_shmctl_args(args):
    """ipc() registers (call, first, second, third, ptr) -> shmctl's (shmid, cmd, buf) with
    cmd's IPC_64 bit stripped as ksys_old_shmctl does; None when it is not SHMCTL."""
    if len(args) < 5 or args[0] is None or args[0] & 0xFFFF != SHMCTL_IPC_CALL:
        return None                # (ipc() takes the call from its low 16 bits: VERSION)
    cmd = args[2] & ~IPC_64 if args[2] is not None else None
    return (args[1], cmd, args[4])


def _holds(raw, test, value):
    if test == "&":
        return bool(raw & value)
    if test == "==":
        return raw == value
    return raw != value


_PROT_BITS = ((0x1, "PROT_READ"), (0x2, "PROT_WRITE"), (0x4, "PROT_EXEC"),
              (0x01000000, "PROT_GROWSDOWN"), (0x02000000, "PROT_GROWSUP"))
#: MAP_* (asm-generic/mman-common.h, mman.h; x86/arm/arm64 values).
_MAP_BITS = ((0x01, "MAP_SHARED"), (0x02, "MAP_PRIVATE"), (0x10, "MAP_FIXED"),
             (0x20, "MAP_ANONYMOUS"), (0x0100, "MAP_GROWSDOWN"), (0x0800, "MAP_DENYWRITE"),
             (0x1000, "MAP_EXECUTABLE"), (0x2000, "MAP_LOCKED"), (0x4000, "MAP_NORESERVE"),
             (0x8000, "MAP_POPULATE"), (0x10000, "MAP_NONBLOCK"), (0x20000, "MAP_STACK"),
             (0x40000, "MAP_HUGETLB"), (0x80000, "MAP_SYNC"), (0x100000, "MAP_FIXED_NOREPLACE"),
             (0x4000000, "MAP_UNINITIALIZED"))
_SHM_COMMANDS = {0: "IPC_RMID", 1: "IPC_SET", 2: "IPC_STAT", 3: "IPC_INFO", 11: "SHM_LOCK",
                 12: "SHM_UNLOCK", 13: "SHM_STAT", 14: "SHM_INFO", 15: "SHM_STAT_ANY"}
_RESOURCES = ("RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE",
              "RLIMIT_RSS", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS",
              "RLIMIT_LOCKS", "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE",
              "RLIMIT_RTPRIO", "RLIMIT_RTTIME")


def _bit_names(bits, value):
    if value == 0:
        return "0"
    names, rest = [], value
    for bit, label in bits:
        if rest & bit:
            names.append(label)
            rest &= ~bit
    if rest:
        names.append("0x%x" % rest)
    return "|".join(names)


def shm_command_name(cmd):
    """``SHM_LOCK`` for 11; IPC_64 (0x100) shown as ``|IPC_64``; unknown as hex."""
    if cmd is None:
        return None
    cmd &= 0xFFFFFFFF
    base = _SHM_COMMANDS.get(cmd & ~IPC_64)
    if base is None:
        return "0x%x" % cmd
    return base + ("|IPC_64" if cmd & IPC_64 else "")


def resource_name(resource):
    if resource is None:
        return None
    resource &= 0xFFFFFFFF
    return _RESOURCES[resource] if resource < len(_RESOURCES) else "0x%x" % resource


def decode_surface(name, args, new_limit=None):
    """The decoded facts of a surface call (not the mlock family), under Tracee's
    ``mlockaudit`` object: mmap's prot/flag names and the locked length, shmctl's command,
    the resource and the new limit ({soft, hard}, or None where the backend saw only the
    pointer). {} for the family. Unknown arguments decode to None."""
    def arg(position):
        return args[position] if position < len(args) else None
    if name == "mmap":
        prot, flags, length = arg(2), arg(3), arg(1)
        return {"protNames": _bit_names(_PROT_BITS, prot & 0xFFFFFFFF) if prot is not None
                else None,
                "flagNames": _bit_names(_MAP_BITS, flags & 0xFFFFFFFF) if flags is not None
                else None,
                "lockedLength": length}
    if name == "shmctl":
        return {"command": shm_command_name(arg(1))}
    if name == "setrlimit":
        return {"resourceName": resource_name(arg(0)), "newLimit": new_limit}
    if name == "prlimit64":
        return {"resourceName": resource_name(arg(1)), "newLimit": new_limit}
    return {}


def action(name, args):
    """ECS event.action / CEF act / LEEF cat: locked-memory, unlocked-memory or
    changed-memlock-limit. shmctl's follows its command (SHM_UNLOCK unlocks)."""
    if name in ("munlock", "munlockall"):
        return "unlocked-memory"
    if name in ("setrlimit", "prlimit64"):
        return "changed-memlock-limit"
    if name == "shmctl" and len(args) > 1 and args[1] is not None \
            and args[1] & 0xFFFFFFFF & ~IPC_64 == SHM_UNLOCK:
        return "unlocked-memory"
    return "locked-memory"


def errno_name(ret):
    """``EINVAL`` for a return value of -22; None for success or an unknown value."""
    if ret is None or ret >= 0:
        return None
    return _errno.errorcode.get(-ret)


def host_arch(machine):
    """Our arch name for ``os.uname().machine``; None when the family is not mapped."""
    return MACHINE_ARCH.get(machine)
