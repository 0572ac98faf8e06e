"""Audit record parsing and event assembly, offline."""

import pytest
from hypothesis import given, settings, strategies as st

from mlockaudit.audit import records
from mlockaudit.audit.records import (RecordError, decode_proctitle, decode_string,
                                      parse_fields, parse_log_line, parse_syscall)

from audit_text import BODY, BODY_3_10


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
