"""Issue #11, audit records that are not what the kernel writes: each becomes a rejected
line with a reason (or an event marked incomplete, when the record was cut short), the
rest of the file replays, and every line is counted once.

Class 4: a bad value in a SYSCALL (non-hex a0, a bad stamp) is rejected when the record is
fed, never later (in flush, or blamed on a valid line). Class 5: out-of-range timestamps.
Class 7: records cut short, numbers the kernel never prints. Class 8: a foreign SYSCALL
with the stamp of a pending call. The records are the real auditd capture's, edited.
"""

import os

import pytest

from conftest import CAPTURES
from mlockaudit.audit import records
from mlockaudit.audit.assembler import Assembler
from mlockaudit.audit.records import RecordError, parse_log_line
from mlockaudit.audit.backend import AuditSource
from mlockaudit.replay import replay

with open(os.path.join(CAPTURES, "auditd-raw.log"), "rb") as _handle:
    RAW_LINES = _handle.read().splitlines()
#: The first mlock2 call of the real capture: its SYSCALL and PROCTITLE lines.
SYSCALL_LINE = next(line for line in RAW_LINES if b"syscall=325 " in line)
STAMP = SYSCALL_LINE[SYSCALL_LINE.index(b"audit(") + 6:SYSCALL_LINE.index(b")")]
PROCTITLE_LINE = next(line for line in RAW_LINES if line.startswith(b"type=PROCTITLE")
                      and b"(" + STAMP + b")" in line)
#: A later call (another stamp) that stays valid: the rest of the file must still replay.
LATER = [line.replace(STAMP, b"1795715999.000:999999") for line in (SYSCALL_LINE, PROCTITLE_LINE)]


def replay_lines(tmp_path, lines, **kwargs):
    path = tmp_path / "audit.log"
    path.write_bytes(b"\n".join(lines) + b"\n")
    events = []
    stats = replay(str(path), events.append, source="audit", **kwargs)
    assert stats.lines == len(lines) == stats.parsed + stats.skipped + stats.rejected_total
    return events, stats


def edited(old, new, line=SYSCALL_LINE):
    assert old in line, old
    return line.replace(old, new, 1)


# -- class 4 ------------------------------------------------------------------------------

@pytest.mark.parametrize("old,new,reason", [
    (b"a0=7f072befe000", b"a0=zz", "bad hex value"),
    (b"a1=2000", b"a1=0x2000", "bad hex value"),
    (b"arch=c000003e", b"arch=c00g003e", "bad hex value"),
    (b"syscall=325", b"syscall=3x5", "bad number"),
])
def test_class4_non_hex_a0_is_rejected_not_raised(tmp_path, old, new, reason):
    events, stats = replay_lines(tmp_path, [edited(old, new), PROCTITLE_LINE] + LATER)
    assert stats.rejected == {reason: 1}
    assert len(events) == stats.events == 1           # the later call, nothing else
    assert events[0].extra["serial"] == 999999


@pytest.mark.parametrize("stamp,reason", [
    (b"17957x5167.667:100011", "bad stamp"), (b"1795715167.667", "bad stamp"),
    (b"1795715167.667:", "bad stamp"), (b"99999999999999:1", "bad stamp"),
    (b"1795715167.667:1" + b"0" * 30, "bad stamp"),
])
def test_class4_bad_stamp_is_rejected_where_it_is(tmp_path, stamp, reason):
    lines = [line.replace(STAMP, stamp) for line in (SYSCALL_LINE, PROCTITLE_LINE)] + LATER
    events, stats = replay_lines(tmp_path, lines)
    assert stats.rejected == {reason: 2} and len(events) == stats.events == 1


def test_class4_a_bad_record_never_blames_the_next_valid_line():
    events = []
    assembler = Assembler(events.append)
    rtype, stamp, body, node = parse_log_line(edited(b"a0=7f072befe000", b"a0=-5"))
    with pytest.raises(RecordError):
        assembler.feed(rtype, stamp, body, node)
    assembler.feed(*parse_log_line(PROCTITLE_LINE))     # valid: must not raise
    assembler.flush()                                   # nothing left that can fail
    assert events == [] and assembler.events == 0 and assembler.orphans == 1


def test_class4_live_log_follow_survives_a_bad_line(tmp_path):
    """``start --input FILE``: the same records through the live text path."""
    from mlockaudit.audit.textinput import LogFollower
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    events = []
    backend = AuditSource(events.append, session=None)
    backend.text = LogFollower(str(path))
    with open(str(path), "ab") as handle:
        handle.write(b"\n".join([edited(b"a0=7f072befe000", b"a0=zz"), PROCTITLE_LINE,
                                 edited(b"1795715167.667", b"99999999999999.000"),
                                 PROCTITLE_LINE.replace(STAMP, b"99999999999999.000:100011")]
                                + LATER) + b"\n")
    assert backend.pump() == 6
    backend.assembler.expire(10 ** 9)                   # (what tick() does: must not raise)
    backend.assembler.flush()
    assert len(events) == 1 and backend.feeder.rejected == 2
    assert backend.feeder.rejected_reasons == {"bad hex value": 1, "timestamp out of range": 1}


# -- class 5 ------------------------------------------------------------------------------

def test_class5_timestamp_out_of_range_is_rejected_at_parse_time(tmp_path):
    events, stats = replay_lines(tmp_path, [
        edited(b"1795715167.667", b"99999999999999.000"), PROCTITLE_LINE.replace(
            STAMP, b"99999999999999.000:100011")] + LATER)
    assert stats.rejected == {"timestamp out of range": 1} and len(events) == 1
    with pytest.raises(RecordError) as info:
        records.parse_stamp(b"9223372037.000:1")        # just past 2262-04-11
    assert info.value.reason == "timestamp out of range"
    assert records.parse_stamp(b"9223372036.000:1")[0] == 9223372036 * 10 ** 9


@pytest.mark.parametrize("timestamp", [0, 1, 2 ** 63 - 1, 2 ** 63, 2 ** 200, -1, -2 ** 70])
@pytest.mark.parametrize("format_name", ["tracee", "ecs", "cef", "leef"])
def test_class5_formatters_never_raise_for_any_int_timestamp(timestamp, format_name):
    from mlockaudit.formats import get_formatter
    from mlockaudit.transports.rfc5424 import Framer
    events = []
    assembler = Assembler(events.append)
    for line in (SYSCALL_LINE, PROCTITLE_LINE):
        assembler.feed(*parse_log_line(line))
    event = events[0]
    event.timestamp = timestamp
    message = get_formatter(format_name)(event)
    assert message and "\n" not in message
    for kind in ("udp", "tcp", "unix"):
        data, _ = Framer(kind, hostname="h", procid=1).frame(message, event)
        assert data.count(b"\n") == 0


def test_class5_bad_epoch_offset_header_replays_without_clock(tmp_path):
    with open(os.path.join(CAPTURES, "tracepoint.trace"), "rb") as handle:
        header, _, body = handle.read().partition(b"\n")
    for bad in (b"epoch_offset_ns=1" + b"0" * 30, b"epoch_offset_ns=12x4",
                b"epoch_offset_ns=" + b"9" * 5000):
        path = tmp_path / "capture.trace"
        path.write_bytes(header.replace(b"epoch_offset_ns=1795714613701236267", bad) +
                         b"\n" + body)
        events = []
        stats = replay(str(path), events.append)
        assert stats.events == 198 and stats.rejected == {"bad capture header": 1}
        assert all(event.timestamp is None for event in events)
        assert all("traceClockNs" in event.extra for event in events)
        assert "no clock anchor" in stats.summary()


# -- class 7 ------------------------------------------------------------------------------

@pytest.mark.parametrize("cut", [b" key=", b" exe=", b" comm=\"pla", b" key=\"secrets-wa"])
def test_class7_syscall_cut_before_key_is_incomplete(tmp_path, cut):
    line = SYSCALL_LINE[:SYSCALL_LINE.rindex(cut) + len(cut)]
    events, stats = replay_lines(tmp_path, [line, PROCTITLE_LINE] + LATER)
    assert stats.rejected == {} and stats.events == 2 and stats.incomplete == 1
    cut_event = [event for event in events if event.extra["serial"] != 999999][0]
    assert cut_event.extra["incomplete"] is True and cut_event.name == "mlock2"
    assert "incomplete" not in [e for e in events if e.extra["serial"] == 999999][0].extra


@pytest.mark.parametrize("title,shown", [
    (b"proctitle=2F776F726B2F6D61696E2", "/work/main"),        # odd length: cut
    (b"proctitle=\"/usr/bin/pyth", "/usr/bin/pyth"),            # quote never closed
    (b"proctitle=zz2F776F", None),                              # not hex at all
])
def test_class7_cut_or_non_hex_proctitle_is_incomplete(tmp_path, title, shown):
    proctitle = PROCTITLE_LINE[:PROCTITLE_LINE.index(b"proctitle=")] + title
    events, stats = replay_lines(tmp_path, [SYSCALL_LINE, proctitle] + LATER)
    assert stats.rejected == {} and stats.incomplete == 1
    cut_event = [event for event in events if event.extra["serial"] != 999999][0]
    assert cut_event.extra.get("incomplete") is True
    assert cut_event.process.extra["proctitle"] == shown


@pytest.mark.parametrize("old,new,reason", [
    (b"a0=7f072befe000", b"a0=-5", "bad hex value"),
    (b"a1=2000", b"a1=1_000", "bad hex value"),
    (b"a0=7f072befe000", b"a0=1" + b"0" * 16, "number out of range"),
    (b"a2=1 ", b"a2=%s " % (b"f" * 4000), "number out of range"),
    (b"success=yes", b"success=maybe", "bad value"),
    (b"exit=0", b"exit=99999999999999999999", "number out of range"),
    (b"exit=0", b"exit=--5", "bad number"),
    (b"exit=0", b"exit=1" + b"0" * 5000, "number out of range"),
    (b"success=yes exit=0 ", b"success=yes ", "bad value"),
])
def test_class7_numbers_the_kernel_never_prints_are_rejected(tmp_path, old, new, reason):
    events, stats = replay_lines(tmp_path, [edited(old, new), PROCTITLE_LINE] + LATER)
    assert stats.rejected == {reason: 1} and len(events) == 1


def test_class7_huge_ids_in_the_process_part_are_unknown_not_raised(tmp_path):
    line = edited(b"pid=5063", b"pid=" + b"7" * 5000)
    line = line.replace(b"uid=0 gid", b"uid=--5 gid")
    events, stats = replay_lines(tmp_path, [line, PROCTITLE_LINE])
    assert stats.rejected == {} and events[0].pid is None and events[0].uid is None


def test_class7_proctitle_record_without_value_is_rejected(tmp_path):
    bare = PROCTITLE_LINE[:PROCTITLE_LINE.index(b"proctitle=")]
    events, stats = replay_lines(tmp_path, [SYSCALL_LINE, bare] + LATER)
    assert stats.rejected == {"PROCTITLE without proctitle=": 1}


# -- class 8 ------------------------------------------------------------------------------

def test_class8_foreign_syscall_sharing_a_stamp_keeps_the_pending_call(tmp_path):
    """Two hosts' logs merged without node=: host B's execve has host A's mlock2 stamp."""
    foreign = next(line for line in RAW_LINES if b"syscall=44 " in line)
    foreign = foreign.replace(foreign[foreign.index(b"audit(") + 6:foreign.index(b")")], STAMP)
    events, stats = replay_lines(tmp_path, [SYSCALL_LINE, foreign, PROCTITLE_LINE])
    assert stats.events == len(events) == 1 and events[0].name == "mlock2"
    assert stats.rejected == {} and "stamp of a call" in stats.summary()
    assembler = Assembler(lambda event: None)
    for line in (SYSCALL_LINE, foreign):
        assembler.feed(*parse_log_line(line))
    assert assembler.foreign == 1 and assembler.collisions == 1 and assembler.in_flight == 1
