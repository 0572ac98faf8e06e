"""Audit record parsing and event assembly, offline."""

import pytest
from hypothesis import given, settings, strategies as st

from mlockaudit.audit import records
from mlockaudit.audit.assembler import Assembler
from mlockaudit.audit.records import (RecordError, decode_proctitle, decode_string,
                                      parse_fields, parse_log_line, parse_syscall)

BODY = (b"arch=c000003e syscall=325 success=no exit=-22 a0=7f470c0a0000 a1=2000 a2=63 a3=0 "
        b"items=0 ppid=10176 pid=10217 auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 "
        b"egid=0 sgid=0 fsgid=0 tty=pts0 ses=4294967295 comm=\"storm\" "
        b"exe=\"/usr/local/bin/storm\" subj=unconfined key=\"mlockaudit\"")
# RHEL 7's 3.10 prints ses= before tty= (audit_log_task_info of that era)
BODY_3_10 = BODY.replace(b"tty=pts0 ses=4294967295", b"ses=4294967295 tty=pts0")


def kernel_untrusted(value):
    """audit_log_untrustedstring(): quoted unless a byte is '"', < 0x21 or > 0x7e; then hex."""
    if any(b == 0x22 or b < 0x21 or b > 0x7E for b in value):
        return value.hex().upper().encode()
    return b'"' + value + b'"'


def test_log_line_shapes():
    line = b"type=SYSCALL msg=audit(1795713466.498:200019): " + BODY
    assert parse_log_line(line) == (records.SYSCALL, b"1795713466.498:200019", BODY, None)
    node = parse_log_line(b"node=web1 type=EOE msg=audit(1795713466.498:200019): ")
    assert node == (records.EOE, b"1795713466.498:200019", b"", b"web1")
    enriched = parse_log_line(b"type=SYSCALL msg=audit(1.002:3): " + BODY + b"\x1dARCH=x86_64 SYSCALL=mlock2")
    assert enriched[2] == BODY
    assert parse_log_line(b"type=UNKNOWN[1335] msg=audit(1.0:2): x=1")[0] == 1335
    assert parse_log_line(b"type=USER_ACCT msg=audit(1.0:2): pid=1 msg='op=x'")[0] == b"USER_ACCT"


@pytest.mark.parametrize("line,reason", [
    (b"hello", "no type="), (b"type=SYSCALL", "no msg="), (b"type=SYSCALL foo=bar", "no msg="),
    (b"type=SYSCALL msg=audi(1.0:1): x", "no audit( stamp"),
    (b"type=SYSCALL msg=audit(1.0:1 x", "unterminated stamp"), (b"node=x", "node= without record")])
def test_bad_lines_have_reasons(line, reason):
    with pytest.raises(RecordError) as info:
        parse_log_line(line)
    assert info.value.reason == reason


def test_stamp():
    assert records.parse_stamp(b"1795713466.498:200019") == (1795713466498000000, 200019)
    with pytest.raises(RecordError):
        records.parse_stamp(b"17957x3466.498:200019")


def test_fast_path_equals_generic_parse():
    fast = parse_syscall(BODY)
    generic = parse_fields(BODY)
    assert all(generic[key] == value for key, value in fast.items())
    assert parse_syscall(BODY_3_10)[b"tty"] == b"pts0"          # fallback path
    assert parse_syscall(BODY_3_10)[b"ses"] == b"4294967295"


def test_lsm_label_with_spaces_stays_one_value():
    body = BODY.replace(b"subj=unconfined", b"subj=cri-containerd.apparmor.d (enforce)")
    assert parse_syscall(body)[b"subj"] == b"cri-containerd.apparmor.d (enforce)"
    assert parse_syscall(body)[b"key"] == b'"mlockaudit"'


def test_missing_return_value():
    body = BODY.replace(b"success=no exit=-22 ", b"")
    fields = parse_syscall(body)
    assert b"exit" not in fields and fields[b"pid"] == b"10217"


def test_decode_values():
    assert decode_string(b'"storm"') == "storm"
    assert decode_string(b"6120622D39") == "a b-9"
    assert decode_string(b"(null)") is None and decode_string(b"?") is None
    assert decode_string(b"FFFE") == b"\xff\xfe".decode("utf-8", "surrogateescape")
    assert decode_string(b"ABC") == "ABC"                   # odd length: kept as printed
    assert decode_proctitle(b"707974686F6E33002D6300783D31") == "python3 -c x=1"
    assert decode_proctitle(b'"sleep"') == "sleep"


@settings(max_examples=300, deadline=None)
@given(comm=st.binary(min_size=1, max_size=15).filter(lambda b: b"\0" not in b),
       exe=st.binary(min_size=1, max_size=60).filter(lambda b: b"\0" not in b))
def test_any_comm_and_exe_round_trip_and_never_move_the_pid(comm, exe):
    body = (BODY.replace(b'comm="storm"', b"comm=" + kernel_untrusted(comm))
                .replace(b'exe="/usr/local/bin/storm"', b"exe=" + kernel_untrusted(exe)))
    fields = parse_syscall(body)
    assert fields[b"pid"] == b"10217" and fields[b"ppid"] == b"10176"
    assert decode_string(fields[b"comm"]).encode("utf-8", "surrogateescape") == comm
    assert decode_string(fields[b"exe"]).encode("utf-8", "surrogateescape") == exe


# -- assembler ---------------------------------------------------------------------------

SYSCALL_REC = (records.SYSCALL, BODY)
PROCTITLE_REC = (records.PROCTITLE, b"proctitle=73746F726D")
EOE_REC = (records.EOE, b"")


def run(assembler_records, **kwargs):
    events = []
    assembler = Assembler(events.append, **kwargs)
    for rtype, stamp, body in assembler_records:
        assembler.feed(rtype, stamp, body)
    return assembler, events


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
