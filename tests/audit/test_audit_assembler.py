"""Audit records -> calls (audit/assembler.py): EOE and PROCTITLE complete an event, out of
order and interleaved records, foreign syscalls, bounds and expiry."""

import pytest

from mlockaudit.audit import records
from mlockaudit.audit.assembler import Assembler
from mlockaudit.audit.records import RecordError

from audit_text import BODY

SYSCALL_REC = (records.SYSCALL, BODY)
PROCTITLE_REC = (records.PROCTITLE, b"proctitle=73746F726D")
EOE_REC = (records.EOE, b"")


def run(assembler_records, **kwargs):
    events = []
    assembler = Assembler(events.append, **kwargs)
    for rtype, stamp, body in assembler_records:
        assembler.feed(rtype, stamp, body)
    return assembler, events



def kernel_untrusted(value):
    """audit_log_untrustedstring(): quoted unless a byte is '"', < 0x21 or > 0x7e; then hex."""
    if any(b == 0x22 or b < 0x21 or b > 0x7E for b in value):
        return value.hex().upper().encode()
    return b'"' + value + b'"'


def test_in_order_event():
    asm, events = run([(t, b"1.000:1", b) for t, b in (SYSCALL_REC, PROCTITLE_REC, EOE_REC)])
    assert len(events) == 1 and asm.in_flight == 0
    event = events[0]
    assert (event.name, event.pid, event.ppid, event.comm, event.ret) == (
        "mlock2", 10217, 10176, "storm", -22)
    assert event.args == (0x7F470C0A0000, 0x2000, 0x63)
    assert event.process.extra["proctitle"] == "storm" and event.extra["serial"] == 1


def test_out_of_order_and_interleaved():
    recs = [(records.PROCTITLE, b"1.000:2", PROCTITLE_REC[1]),      # before its SYSCALL
            (records.SYSCALL, b"1.000:1", BODY),
            (records.EOE, b"1.000:2", b""),
            (records.SYSCALL, b"1.000:2", BODY.replace(b"pid=10217", b"pid=2")),
            (records.PROCTITLE, b"1.000:1", PROCTITLE_REC[1]),
            (records.EOE, b"1.000:1", b"")]
    asm, events = run(recs)
    assert sorted(e.pid for e in events) == [2, 10217] and asm.in_flight == 0
    assert all(e.process.extra["proctitle"] == "storm" for e in events)


def test_foreign_syscalls_are_dropped_with_their_records():
    other = BODY.replace(b"syscall=325", b"syscall=59")
    recs = [(records.SYSCALL, b"1.000:1", other), (records.PROCTITLE, b"1.000:1", PROCTITLE_REC[1]),
            (records.EOE, b"1.000:1", b"")]
    asm, events = run(recs)
    assert events == [] and asm.in_flight == 0 and asm.foreign == 1


def test_family_number_of_another_arch_is_not_the_family():
    # 149 is mlock on x86_64 but on i386 it is _sysctl
    i386 = BODY.replace(b"arch=c000003e syscall=325", b"arch=40000003 syscall=149")
    asm, events = run([(records.SYSCALL, b"1.000:1", i386)])
    assert events == [] and asm.foreign == 1
    compat = BODY.replace(b"arch=c000003e syscall=325", b"arch=40000003 syscall=376")
    asm, events = run([(records.SYSCALL, b"1.000:1", compat), (records.EOE, b"1.000:1", b"")])
    assert [(e.name, e.arch) for e in events] == [("mlock2", "i386")]


def test_incomplete_events_complete_at_flush_and_are_marked():
    asm, events = run([(records.SYSCALL, b"1.000:1", BODY)])
    assert events == [] and asm.in_flight == 1
    asm.flush()
    assert len(events) == 1 and events[0].extra["incomplete"] is True and asm.incomplete == 1


def test_memory_is_bounded():
    recs = [(records.SYSCALL, b"1.000:%d" % i, BODY) for i in range(1000)]
    asm, events = run(recs, max_pending=64)
    assert asm.in_flight <= 64 and len(events) == 1000 - asm.in_flight


def test_expire_by_clock():
    events = []
    asm = Assembler(events.append, timeout=2.0, clock=100.0)
    asm.feed(records.SYSCALL, b"1.000:1", BODY)
    asm.expire(101.0)
    assert events == []
    asm.expire(102.5)
    assert len(events) == 1 and events[0].extra["incomplete"]


def test_second_syscall_for_one_stamp_is_an_error():
    with pytest.raises(RecordError):
        run([(records.SYSCALL, b"1.000:1", BODY), (records.SYSCALL, b"1.000:1", BODY)])
