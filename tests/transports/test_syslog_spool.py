"""The disk spool on its own: FIFO order, the size cap drops the oldest and counts them,
what is left survives a close and a reopen, one process at a time."""

import os

import pytest

from mlockaudit.transports.spool import Spool, SpoolError


def drain(spool):
    out = []
    while len(spool):
        records = spool.peek(300)
        assert records
        out.extend(records)
        spool.consume(len(records))
    return out


def test_fifo_across_segments(tmp_path):
    spool = Spool(str(tmp_path), 1 << 20, segment_bytes=256)
    records = [b"message %d" % i for i in range(100)]
    spool.append(records[:50])
    spool.append(records[50:])
    assert len(spool) == 100
    assert drain(spool) == records
    assert len(spool) == 0 and not [f for f in os.listdir(str(tmp_path)) if f.endswith(".spool")]
    spool.close()


def test_cap_drops_the_oldest_and_counts_them(tmp_path):
    spool = Spool(str(tmp_path), 4096, segment_bytes=1024)
    records = [b"%04d" % i + b"x" * 96 for i in range(200)]     # 104 bytes a record
    dropped = spool.append(records)
    assert dropped == spool.dropped > 0
    assert spool.size <= 4096
    kept = drain(spool)
    assert len(kept) + spool.dropped == 200
    assert kept == records[-len(kept):]                           # the newest survive, in order
    spool.close()


def test_partly_sent_spool_survives_close_without_repeats(tmp_path):
    spool = Spool(str(tmp_path), 1 << 20, segment_bytes=512)
    records = [b"r%d" % i for i in range(300)]
    spool.append(records)
    head = spool.peek(20)
    spool.consume(len(head))
    spool.close()
    again = Spool(str(tmp_path), 1 << 20, segment_bytes=512)
    assert len(again) == 300 - len(head)
    assert drain(again) == records[len(head):]
    again.close()


def test_a_record_cut_by_a_crash_is_counted_not_sent(tmp_path):
    spool = Spool(str(tmp_path), 1 << 20)
    spool.append([b"one", b"two"])
    spool.close()
    segment = [f for f in os.listdir(str(tmp_path)) if f.endswith(".spool")][0]
    with open(os.path.join(str(tmp_path), segment), "ab") as handle:
        handle.write(b"\x00\x00\x01\x00half")                      # length 256, 4 bytes
    again = Spool(str(tmp_path), 1 << 20)
    assert again.dropped == 1
    assert drain(again) == [b"one", b"two"]
    assert again.dropped == 1
    again.close()


def test_one_process_at_a_time(tmp_path):
    first = Spool(str(tmp_path), 1 << 20)
    with pytest.raises(SpoolError):
        Spool(str(tmp_path), 1 << 20)
    first.close()
    Spool(str(tmp_path), 1 << 20).close()
