"""The one table of the mlock family: syscall numbers per architecture, audit arch ids,
flag bits and errno names.

Everything that turns a number from the kernel into a name goes through here, so audit
records (which carry ``arch=`` and ``syscall=``), tracefs events (which carry the name)
and the audit rule compiler (which needs the numbers) cannot disagree.
"""

import errno as _errno

#: The family, in the order Tracee lists them.
FAMILY = ("mlock", "mlock2", "munlock", "mlockall", "munlockall")

#: Tracee's argument names and C types for each call (pkg/events/core.go).
ARG_SPECS = {
    "mlock": (("addr", "const void*"), ("len", "size_t")),
    "mlock2": (("addr", "const void*"), ("len", "size_t"), ("flags", "int")),
    "munlock": (("addr", "const void*"), ("len", "size_t")),
    "mlockall": (("flags", "int"),),
    "munlockall": (),
}

#: AUDIT_ARCH_* values (include/uapi/linux/audit.h) -> our arch name.
AUDIT_ARCH = {
    0xC000003E: "x86_64",
    0x40000003: "i386",
    0xC00000B7: "aarch64",
    0x40000028: "arm",
}
ARCH_AUDIT = {name: value for value, name in AUDIT_ARCH.items()}

#: Syscall numbers per arch (arch/*/entry/syscalls/*.tbl, include/uapi/asm-generic/unistd.h).
SYSCALL_NUMBERS = {
    "x86_64": {"mlock": 149, "munlock": 150, "mlockall": 151, "munlockall": 152, "mlock2": 325},
    "i386": {"mlock": 150, "munlock": 151, "mlockall": 152, "munlockall": 153, "mlock2": 376},
    "aarch64": {"mlock": 228, "munlock": 229, "mlockall": 230, "munlockall": 231, "mlock2": 284},
    "arm": {"mlock": 150, "munlock": 151, "mlockall": 152, "munlockall": 153, "mlock2": 390},
}

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
    if flags == 0:
        return "0"
    names = []
    rest = flags & 0xFFFFFFFF
    for bit, label in bits:
        if rest & bit:
            names.append(label)
            rest &= ~bit
    if rest:
        names.append("0x%x" % rest)
    return "|".join(names)


def errno_name(ret):
    """``EINVAL`` for a return value of -22; None for success or an unknown value."""
    if ret is None or ret >= 0:
        return None
    return _errno.errorcode.get(-ret)


def host_arch(machine):
    """Our arch name for ``os.uname().machine``; None when the family is not mapped."""
    return MACHINE_ARCH.get(machine)
