"""The surface's audit rules: each rule our encoder builds, decoded back field by field
against the kernel's ``struct audit_rule_data`` (include/uapi/linux/audit.h), and compared
with the bytes auditctl builds for the same text (audit-userspace's
audit_rule_fieldpair_data: fields in command-line order, the key last; ``&`` is
AUDIT_BIT_MASK, ``!=`` AUDIT_NOT_EQUAL, values as u32)."""

import struct

from conftest import FIXTURES
from mlockaudit import syscalls
from mlockaudit.audit import events as audit_events, rules

# include/uapi/linux/audit.h
AUDIT_FILTER_EXIT, AUDIT_ALWAYS, AUDIT_ARCH, AUDIT_FILTERKEY = 0x04, 2, 11, 210
AUDIT_ARG = {0: 200, 1: 201, 2: 202, 3: 203}
OPS = {"&": 0x08000000, "=": 0x40000000, "!=": 0x30000000}
ARCH = {"b64": 0xC000003E, "b32": 0x40000003}


def auditctl_bytes(arch, number, conditions, key=b"mlockaudit"):
    """What auditctl sends for ``-a always,exit -F arch=A -S N -F aX<op>V ... -k KEY``,
    built straight from the struct's layout (not through our encoder)."""
    mask = [0] * 64
    mask[number // 32] |= 1 << (number % 32)
    fields = [AUDIT_ARCH] + [AUDIT_ARG[a] for a, _, _ in conditions] + [AUDIT_FILTERKEY]
    values = [ARCH[arch]] + [v for _, _, v in conditions] + [len(key)]
    flags = [OPS["="]] + [OPS[op] for _, op, _ in conditions] + [OPS["="]]
    pad = [0] * (64 - len(fields))
    return struct.pack("=III64I64I64I64II", AUDIT_FILTER_EXIT, AUDIT_ALWAYS, len(fields),
                       *(mask + fields + pad + values + pad + flags + pad + [len(key)])) + key


EXPECTED_X86_64 = [
    ("-a always,exit -F arch=b64 -S mmap -F a3&0x2000 -k mlockaudit", "b64", 9,
     [(3, "&", 0x2000)]),
    ("-a always,exit -F arch=b64 -S shmctl -F a1=11 -k mlockaudit", "b64", 31, [(1, "=", 11)]),
    ("-a always,exit -F arch=b64 -S shmctl -F a1=12 -k mlockaudit", "b64", 31, [(1, "=", 12)]),
    ("-a always,exit -F arch=b64 -S setrlimit -F a0=8 -k mlockaudit", "b64", 160,
     [(0, "=", 8)]),
    ("-a always,exit -F arch=b64 -S prlimit64 -F a1=8 -F a2!=0 -k mlockaudit", "b64", 302,
     [(1, "=", 8), (2, "!=", 0)]),
    ("-a always,exit -F arch=b32 -S mmap2 -F a3&0x2000 -k mlockaudit", "b32", 192,
     [(3, "&", 0x2000)]),
    ("-a always,exit -F arch=b32 -S shmctl -F a1=11 -k mlockaudit", "b32", 396, [(1, "=", 11)]),
    ("-a always,exit -F arch=b32 -S shmctl -F a1=12 -k mlockaudit", "b32", 396, [(1, "=", 12)]),
    ("-a always,exit -F arch=b32 -S ipc -F a0=24 -F a2=11 -k mlockaudit", "b32", 117,
     [(0, "=", 24), (2, "=", 11)]),
    ("-a always,exit -F arch=b32 -S ipc -F a0=24 -F a2=12 -k mlockaudit", "b32", 117,
     [(0, "=", 24), (2, "=", 12)]),
    ("-a always,exit -F arch=b32 -S ipc -F a0=24 -F a2=267 -k mlockaudit", "b32", 117,
     [(0, "=", 24), (2, "=", 0x10B)]),
    ("-a always,exit -F arch=b32 -S ipc -F a0=24 -F a2=268 -k mlockaudit", "b32", 117,
     [(0, "=", 24), (2, "=", 0x10C)]),
    ("-a always,exit -F arch=b32 -S setrlimit -F a0=8 -k mlockaudit", "b32", 75, [(0, "=", 8)]),
    ("-a always,exit -F arch=b32 -S prlimit64 -F a1=8 -F a2!=0 -k mlockaudit", "b32", 340,
     [(1, "=", 8), (2, "!=", 0)]),
]

KALLSYMS = {prefix + name for prefix in ("__x64_sys_", "__ia32_sys_") for name in syscalls.FAMILY}


def test_every_surface_rule_is_what_auditctl_sends():
    built, notes = rules.family_rules("x86_64", kallsyms=KALLSYMS)
    surface = [rule for rule in built if rule.conditions]
    assert [rule.to_text() for rule in surface] == [text for text, _, _, _ in EXPECTED_X86_64]
    for rule, (_, arch, number, conditions) in zip(surface, EXPECTED_X86_64):
        assert rule.to_bytes() == auditctl_bytes(arch, number, conditions)


def test_rule_bytes_decode_field_by_field():
    rule = rules.Rule(rules.AUDIT_ALWAYS, arch="x86_64", names=["prlimit64"],
                      conditions=((1, "==", 8), (2, "!=", 0)))
    data = rule.to_bytes()
    header = struct.unpack_from("=III", data)
    assert header == (AUDIT_FILTER_EXIT, AUDIT_ALWAYS, 4)
    words = struct.unpack_from("=64I64I64I64II", data, 12)
    mask, fields, values, flags = words[0:64], words[64:128], words[128:192], words[192:256]
    assert [n for n in range(2048) if mask[n // 32] >> (n % 32) & 1] == [302]
    assert fields[:4] == (AUDIT_ARCH, 201, 202, AUDIT_FILTERKEY) and set(fields[4:]) == {0}
    assert values[:4] == (0xC000003E, 8, 0, 10)
    assert flags[:4] == (OPS["="], OPS["="], OPS["!="], OPS["="])
    assert words[256] == 10 and data[-10:] == b"mlockaudit"
    parsed = rules.parse_rule_bytes(data)
    assert parsed["conditions"] == [(1, "==", 8), (2, "!=", 0)] and parsed["key"] == "mlockaudit"
    assert parsed["arch"] == "x86_64" and parsed["syscalls"] == [302]


def test_the_family_rules_are_unchanged():
    built, _ = rules.family_rules("x86_64", kallsyms=KALLSYMS)
    family = [rule for rule in built if not rule.conditions]
    for rule, name in zip(family, ("always-b64", "always-b32")):
        with open("%s/audit-rules/%s.hex" % (FIXTURES, name)) as handle:
            assert rule.to_bytes().hex() == handle.read().strip()


def test_arm64_hosts_get_the_arm_variant_and_no_ipc():
    built, _ = rules.family_rules("aarch64", kallsyms={"sys_" + n for n in syscalls.FAMILY}
                                  | {"compat_sys_" + n for n in syscalls.FAMILY})
    texts = [rule.to_text() for rule in built if rule.conditions]
    assert "-a always,exit -F arch=b64 -S mmap -F a3&0x2000 -k mlockaudit" in texts
    assert "-a always,exit -F arch=b32 -S shmctl -F a1=267 -k mlockaudit" in texts
    assert "-a always,exit -F arch=b64 -S shmctl -F a1=267 -k mlockaudit" not in texts
    assert not any("-S ipc" in text for text in texts)


def test_events_select_rules_and_no_compat_means_no_b32():
    built, notes = rules.family_rules("x86_64", events=["mmap"],
                                      kallsyms={"__x64_sys_mlock"})
    assert [rule.to_text() for rule in built] == [
        "-a always,exit -F arch=b64 -S mmap -F a3&0x2000 -k mlockaudit"]
    assert notes == ["arch=b32: left out: this kernel runs no 32-bit (i386) callers"]


def test_the_shipped_rules_file_holds_the_x86_64_rules():
    with open("%s/../../rules/50-mlockaudit.rules" % FIXTURES) as handle:
        lines = [line.strip() for line in handle if line.startswith("-a")]
    built, _ = rules.family_rules("x86_64", kallsyms=KALLSYMS)
    assert lines == [rule.to_text() for rule in built]


def test_python_predicate_on_audit_heads():
    def head(a0, a1, a2, a3):
        return (b"c000003e", b"9", b"yes", b"0", a0, a1, a2, a3)
    mmap = ("mmap", "x86_64", 9)
    assert audit_events.head_is_locking(mmap, head(b"0", b"2000", b"3", b"2022"))
    assert not audit_events.head_is_locking(mmap, head(b"0", b"2000", b"3", b"22"))
    ipc = ("shmctl", "i386", 117)
    assert audit_events.head_is_locking(ipc, head(b"18", b"5", b"10b", b"0"))
    assert not audit_events.head_is_locking(ipc, head(b"17", b"5", b"b", b"0"))   # SHMGET
    assert audit_events.head_args(ipc, head(b"18", b"5", b"10b", b"0"))[0] == (5, 0x10B, None)
