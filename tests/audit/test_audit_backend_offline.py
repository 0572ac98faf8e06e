"""Offline parts of the live audit backend: loss from serial gaps, auditd's text inputs
(pipe and followed log across rotation), datagram splitting, read-mode choice."""

import os

from mlockaudit.audit.netlink import split_datagram
from mlockaudit.audit.backend import choose_mode
from mlockaudit.audit.gaps import SerialGaps
from mlockaudit.audit.textinput import LogFollower, StreamInput


def test_serial_gaps_count_missing_events_once_they_cannot_come():
    gaps = SerialGaps(window=10)
    for serial in (1, 2, 2, 3, 6, 5, 7):        # 4 missing; 5 arrives late
        gaps.see(serial)
    assert gaps.lost == 0                        # still inside the window
    gaps.see(30)                                 # 8..29 skipped, most of them beyond window
    gaps.settle(final=True)
    assert gaps.lost == 1 + 22                   # 4, and 8..29


def test_serial_gaps_huge_jump_is_counted_without_a_huge_set():
    gaps = SerialGaps(window=100)
    gaps.see(1)
    gaps.see(10 ** 7)
    assert len(gaps.missing) <= 100
    gaps.settle(final=True)
    assert gaps.lost == 10 ** 7 - 2


def test_log_follower_survives_rotation_and_partial_lines(tmp_path):
    log = tmp_path / "audit.log"
    log.write_bytes(b"old line before start\n")
    follower = LogFollower(str(log))
    with open(log, "ab") as handle:
        handle.write(b"one\ntw")
    assert follower.read_lines() == [b"one"]
    with open(log, "ab") as handle:
        handle.write(b"o\nlast of old")            # written just before rotation
    os.rename(log, str(log) + ".1")              # auditd rotates...
    assert follower.read_lines() == [b"two"]     # (renamed, no new file yet)
    log.write_bytes(b"first of new\n")            # ...and opens a new log
    assert follower.read_lines() == [b"last of old", b"first of new"]
    assert follower.rotations == 1
    with open(log, "ab") as handle:
        handle.write(b"more\n")
    assert follower.read_lines() == [b"more"]


def test_log_follower_after_truncation_starts_over(tmp_path):
    log = tmp_path / "audit.log"
    log.write_bytes(b"")
    follower = LogFollower(str(log))
    with open(log, "ab") as handle:
        handle.write(b"a\nb\n")
    assert follower.read_lines() == [b"a", b"b"]
    log.write_bytes(b"c\n")                      # truncated in place (copytruncate)
    assert follower.read_lines() == [b"c"]


def test_stream_input_reads_a_pipe_to_eof():
    read_fd, write_fd = os.pipe()
    stream = StreamInput(read_fd)
    os.write(write_fd, b"type=EOE msg=audit(1.0:1): \npartial")
    assert stream.read_lines() == [b"type=EOE msg=audit(1.0:1): "]
    assert not stream.finished
    os.close(write_fd)
    assert stream.read_lines() == [b"partial"] and stream.finished
    os.close(read_fd)


def test_split_datagram_takes_sizes_from_the_datagram_not_nlmsg_len():
    payload = b"audit(1795713466.498:200019): arch=c000003e syscall=325"
    header = (len(payload)).to_bytes(4, "little") + (1300).to_bytes(2, "little") + b"\0" * 10
    assert split_datagram(header + payload) == (
        1300, b"1795713466.498:200019", b"arch=c000003e syscall=325")
    ack = (36).to_bytes(4, "little") + (2).to_bytes(2, "little") + b"\0" * 30
    assert split_datagram(ack) is None


def test_read_mode_choice():
    status = {"pid": 0}
    assert choose_mode(status)[0] == "unicast"
    status = {"pid": 2 ** 22 + 12345}            # no such process
    assert choose_mode(status)[0] == "unicast" and "gone" in choose_mode(status)[1]
    status = {"pid": os.getpid()}                # a live daemon
    assert choose_mode(status, release="5.10.0")[0] == "multicast"
    mode, why = choose_mode(status, release="3.10.0-1160.el7.x86_64")
    assert mode is None and "--input -" in why and "au-mlockaudit.conf" in why
    assert choose_mode(status, input_path="-")[0] == "input"
