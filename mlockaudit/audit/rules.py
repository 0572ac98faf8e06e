"""Audit rules: what mlockaudit installs, as auditctl text and as ``struct audit_rule_data``.

Compiled in pure Python (python-audit's rule API needs a C ``struct audit_rule_data **``
that its SWIG binding cannot build). Layout (include/uapi/linux/audit.h)::

    u32 flags (filter list), action, field_count
    u32 mask[64]                       syscall bitmap
    u32 fields[64], values[64], fieldflags[64]
    u32 buflen; char buf[]             string values (the key)

The kernel deletes a rule only when the delete request carries the same bytes it was
added with, so the bytes of every rule we add are kept (see lifecycle) and sent back.

Rules we install:

* per arch (b64 and, where the kernel runs 32-bit callers, b32):
  ``-a always,exit -F arch=b64 -S mlock,mlock2,munlock,mlockall,munlockall -k mlockaudit``
  minus the calls this kernel does not have (RHEL 7's 3.10 has no mlock2);
* per arch, one rule per locking alternative of the rest of the surface (syscalls.LOCKING),
  filtered in the kernel on the argument registers, so plain mmaps never make a record::

    -a always,exit -F arch=b64 -S mmap -F a3&0x2000 -k mlockaudit
    -a always,exit -F arch=b64 -S shmctl -F a1=11 -k mlockaudit        (and a1=12)
    -a always,exit -F arch=b64 -S setrlimit -F a0=8 -k mlockaudit
    -a always,exit -F arch=b64 -S prlimit64 -F a1=8 -F a2!=0 -k mlockaudit

  (b32: mmap2, and on i386 also ``-S ipc -F a0=24 -F a2=11`` etc.: glibc's shmctl there);
  ``a3&0x2000`` is auditctl's AUDIT_BIT_MASK, which audit_comparator() tests as
  ``(left & right) != 0``; the kernel compares the full register (unsigned long) with the
  u32 value, so a2!=0 holds for any non-NULL pointer;
* one ``-A never,exit -F pid=<own pid> -S all -k mlockaudit`` put first (as auditbeat does),
  so mlockaudit's own syscalls never feed records back into the stream it reads.
"""

import struct

from .. import host, syscalls

KEY = "mlockaudit"

AUDIT_FILTER_EXIT = 0x04
AUDIT_FILTER_PREPEND = 0x10
AUDIT_NEVER = 0
AUDIT_ALWAYS = 2
AUDIT_PID = 0
AUDIT_ARCH = 11
AUDIT_FILTERKEY = 210
AUDIT_ARG0 = 200                     # AUDIT_ARG1..3 follow: 201, 202, 203
AUDIT_BIT_MASK = 0x08000000
AUDIT_NOT_EQUAL = 0x30000000
AUDIT_EQUAL = 0x40000000
_OPS = {"&": AUDIT_BIT_MASK, "==": AUDIT_EQUAL, "!=": AUDIT_NOT_EQUAL}
_OP_TEXT = {"&": "&", "==": "=", "!=": "!="}
_OP_BY_VALUE = {value: test for test, value in _OPS.items()}
AUDIT_BITMASK_SIZE = 64
AUDIT_MAX_FIELDS = 64

_HEADER = struct.Struct("=III64I64I64I64II")
# Fields whose value is a length into buf (audit_unpack_string in kernel/auditfilter.c):
# SUBJ_USER..SUBJ_CLR, OBJ_USER..OBJ_LEV_HIGH, WATCH, DIR, EXE, FILTERKEY.
_STRING_FIELDS = frozenset((13, 14, 15, 16, 17, 19, 20, 21, 22, 23, 105, 107, 112,
                            AUDIT_FILTERKEY))

#: mlock2 arrived in Linux 4.4 (commit a8ca5d0ecbdd); used when kallsyms cannot tell.
MLOCK2_SINCE = (4, 4)


class Rule(object):
    """One audit rule: filter list, action, syscalls (or all), field conditions, key."""

    def __init__(self, action, arch=None, names=(), all_syscalls=False, pid=None, key=KEY,
                 prepend=False, conditions=(), ipc=False):
        self.conditions = tuple(conditions)   # ((argument 0..3, "&"/"=="/"!=", value), ...)
        self.ipc = ipc                        # the syscall is i386's ipc(), not names[0]
        self.action = action
        self.arch = arch                  # our arch name, e.g. "x86_64"; None: any
        self.names = tuple(names)         # syscall names of the family
        self.all_syscalls = all_syscalls
        self.pid = pid
        self.key = key
        self.prepend = prepend

    def to_bytes(self):
        """``struct audit_rule_data`` + key, as AUDIT_ADD_RULE / AUDIT_DEL_RULE take it."""
        mask = [0] * AUDIT_BITMASK_SIZE
        if self.all_syscalls:
            mask = [0xFFFFFFFF] * AUDIT_BITMASK_SIZE
        else:
            numbers = syscalls.SYSCALL_NUMBERS[self.arch]
            for name in self.names:
                number = syscalls.IPC_NUMBERS[self.arch] if self.ipc else numbers[name]
                mask[number // 32] |= 1 << (number % 32)
        fields, values, ops = [], [], []
        if self.arch is not None:
            fields.append(AUDIT_ARCH)
            values.append(syscalls.ARCH_AUDIT[self.arch])
        if self.pid is not None:
            fields.append(AUDIT_PID)
            values.append(self.pid)
        ops = [AUDIT_EQUAL] * len(fields)
        for position, test, value in self.conditions:    # auditctl's order: as written
            fields.append(AUDIT_ARG0 + position)
            values.append(value & 0xFFFFFFFF)
            ops.append(_OPS[test])
        key = self.key.encode()
        fields.append(AUDIT_FILTERKEY)
        values.append(len(key))
        ops.append(AUDIT_EQUAL)
        count = len(fields)
        pad = [0] * (AUDIT_MAX_FIELDS - count)
        flags = AUDIT_FILTER_EXIT | (AUDIT_FILTER_PREPEND if self.prepend else 0)
        return _HEADER.pack(flags, self.action, count, *(mask + fields + pad + values + pad
                                                         + ops + pad
                                                         + [len(key)])) + key

    def to_text(self):
        """The rule in auditctl syntax (what ``auditctl -l`` would show)."""
        parts = ["-A" if self.prepend else "-a",
                 ("never" if self.action == AUDIT_NEVER else "always") + ",exit"]
        if self.arch is not None:
            parts += ["-F", "arch=%s" % arch_word(self.arch)]
        if self.pid is not None:
            parts += ["-F", "pid=%d" % self.pid]
        if self.all_syscalls:
            parts += ["-S", "all"]
        elif self.ipc:
            parts += ["-S", "ipc"]
        else:
            parts += ["-S", ",".join(syscalls.KERNEL_NAMES.get((self.arch, name), name)
                                     for name in self.names)]
        for position, test, value in self.conditions:
            parts += ["-F", "a%d%s%s" % (position, _OP_TEXT[test],
                                         "0x%x" % value if test == "&" else "%d" % value)]
        parts += ["-k", self.key]
        return " ".join(parts)


def arch_word(arch):
    """auditctl's b64/b32 for an arch, relative to the machine's native arch."""
    return "b32" if arch in ("i386", "arm") else "b64"


def as_stored(data):
    """The bytes the kernel holds (and lists, and matches a delete against) for a rule we
    sent: AUDIT_FILTER_PREPEND only says where to insert, and audit_add_rule() clears it
    from the stored rule, so a delete must be sent without it."""
    flags = struct.unpack_from("=I", data)[0] & ~AUDIT_FILTER_PREPEND
    return struct.pack("=I", flags) + data[4:]


def parse_rule_bytes(data):
    """``struct audit_rule_data`` (as AUDIT_LIST_RULES returns it) -> dict with the key,
    the arch and pid conditions, the action and the syscall numbers, for recognising our
    rules among everyone's."""
    if len(data) < _HEADER.size:
        raise ValueError("short audit_rule_data")
    values = _HEADER.unpack_from(data)
    flags, action, count = values[0:3]
    mask = values[3:3 + AUDIT_BITMASK_SIZE]
    fields = values[67:67 + AUDIT_MAX_FIELDS]
    vals = values[131:131 + AUDIT_MAX_FIELDS]
    buflen = values[-1]
    buf = data[_HEADER.size:_HEADER.size + buflen]
    ops = values[195:195 + AUDIT_MAX_FIELDS]
    out = {"flags": flags, "action": action, "key": None, "arch": None, "pid": None,
           "conditions": [],
           "all_syscalls": all(m == 0xFFFFFFFF for m in mask),
           "syscalls": [n for n in range(AUDIT_BITMASK_SIZE * 32) if mask[n // 32] >> (n % 32) & 1]}
    offset = 0
    for field, value, op in zip(fields[:count], vals[:count], ops[:count]):
        if field in _STRING_FIELDS:                  # string values are laid out in buf
            text = buf[offset:offset + value]
            offset += value
            if field == AUDIT_FILTERKEY:
                out["key"] = text.decode("utf-8", "replace")
        elif field == AUDIT_ARCH:
            out["arch"] = syscalls.AUDIT_ARCH.get(value, value)
        elif field == AUDIT_PID:
            out["pid"] = value
        elif AUDIT_ARG0 <= field <= AUDIT_ARG0 + 3:
            out["conditions"].append((field - AUDIT_ARG0, _OP_BY_VALUE.get(op, op), value))
    return out


_NATIVE_PREFIXES = ("__x64_sys_", "__arm64_sys_", "SyS_", "sys_", "__se_sys_", "__do_sys_")
_COMPAT_PREFIXES = {"i386": ("__ia32_sys_", "__ia32_compat_sys_", "compat_sys_"),
                    "arm": ("__arm64_compat_sys_", "__arm64_sys_", "compat_sys_")}


def available_calls(arch, native_arch, kallsyms=None, release=None):
    """{name: None if this kernel has the call for ``arch``, else the reason it has not}.

    Asked of /proc/kallsyms (never guessed from the version when the kernel can answer);
    the version is the fallback when kallsyms is unreadable. ``kallsyms``: the names to
    use instead of reading them (tests); an empty set means "unreadable"."""
    names = (set(host.kallsyms() or ()) or None) if kallsyms is None else (kallsyms or None)
    result = {}
    if arch != native_arch and names is not None:
        has_compat = any(name.startswith(("__ia32_", "ia32_", "compat_sys_", "__arm64_compat"))
                         for name in names) or "ia32_sys_call_table" in names
        if not has_compat:
            return {name: "this kernel runs no 32-bit (%s) callers" % arch
                    for name in syscalls.FAMILY}
    for name in syscalls.FAMILY:
        if names is not None:
            prefixes = _NATIVE_PREFIXES + (_COMPAT_PREFIXES.get(arch, ()) if arch != native_arch
                                           else ())
            found = any(prefix + name in names for prefix in prefixes)
            result[name] = None if found else "no %s in /proc/kallsyms" % name
        elif name == "mlock2" and host.kernel_version(release) < MLOCK2_SINCE:
            result[name] = "mlock2 arrived in Linux 4.4; this kernel is %s" % (
                release or host.kernel_release())
        else:
            result[name] = None
    return result


def family_rules(native_arch, events=None, kallsyms=None, release=None, compat=True):
    """The always-rules for this kernel -> (rules, notes) where notes explain omissions:
    per arch the family's rule, then the surface's argument-filtered ones."""
    wanted = [name for name in syscalls.FAMILY if events is None or name in events]
    arches = [native_arch]
    compat_arch = syscalls.COMPAT_ARCH.get(native_arch)
    if compat and compat_arch:
        arches.append(compat_arch)
    rules, notes = [], []
    for arch in arches:
        availability = available_calls(arch, native_arch, kallsyms, release)
        names = [name for name in wanted if availability.get(name) is None]
        reasons = sorted(set(availability[name] for name in wanted
                             if availability.get(name) is not None))
        if not wanted and arch != native_arch:      # only surface calls: is there compat?
            reasons = sorted(set(reason for reason in availability.values()
                                 if reason is not None and "32-bit" in reason))
        if not names and len(reasons) == 1:
            notes.append("arch=%s: left out: %s" % (arch_word(arch), reasons[0]))
        else:
            for name in wanted:
                if availability.get(name) is not None:
                    notes.append("%s (arch=%s): left out: %s" % (
                        name, arch_word(arch), availability[name]))
        if names:
            rules.append(Rule(AUDIT_ALWAYS, arch=arch, names=names))
        if not any(reason.startswith("this kernel runs no 32-bit") for reason in reasons):
            rules += surface_rules(arch, events, compat=False)
    return rules, notes


def surface_rules(native_arch, events=None, compat=True):
    """The argument-filtered always-rules of the surface beyond the mlock family: one per
    locking alternative (syscalls.LOCKING), per arch, plus i386's ipc() SHMCTL ones.

    These calls exist on every kernel mlockaudit supports (prlimit64 since 2.6.36) and
    AUDIT_ARG0..3 fields with =, != and & since 2.6.x, so nothing is left out here."""
    wanted = [name for name in syscalls.SURFACE_EXTRA if events is None or name in events]
    arches = [native_arch]
    compat_arch = syscalls.COMPAT_ARCH.get(native_arch)
    if compat and compat_arch:
        arches.append(compat_arch)
    rules = []
    for arch in arches:
        for name in wanted:
            for alternative in syscalls.locking_alternatives(name, arch):
                rules.append(Rule(AUDIT_ALWAYS, arch=arch, names=[name], conditions=alternative))
            if name == "shmctl" and arch in syscalls.IPC_NUMBERS:
                for alternative in syscalls.IPC_LOCKING:
                    rules.append(Rule(AUDIT_ALWAYS, arch=arch, names=[name],
                                      conditions=alternative, ipc=True))
    return rules


def self_rule(pid):
    """The never-rule that keeps mlockaudit's own syscalls out of the stream."""
    return Rule(AUDIT_NEVER, pid=pid, all_syscalls=True, prepend=True)
