"""The binary ring buffer reader (tracefs/ringbuf.py, tracefs/decode.py): format files,
page layouts, every event header type, hostile comms in fixed fields, and a real page
captured from this machine's kernel (tests/fixtures/ringbuf, kernel in KERNEL)."""

import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from conftest import FIXTURES
from mlockaudit.tracefs import decode, ringbuf

RINGBUF = os.path.join(FIXTURES, "ringbuf")


def fixture_text(name):
    with open(os.path.join(RINGBUF, name)) as handle:
        return handle.read()


def formats():
    return {name: ringbuf.parse_format(fixture_text(name + ".format"))
            for name in ("syscalls_sys_enter_mlock2", "syscalls_sys_exit_mlock2",
                         "task_task_newtask", "task_task_rename", "sched_sched_process_exec",
                         "sched_sched_process_exit")}


def decoder():
    layout = ringbuf.parse_header_page(fixture_text("header_page"))
    fmts = formats()
    dec = decode.Decoder(layout)
    dec.add_syscall_enter(fmts["syscalls_sys_enter_mlock2"], "mlock2", "x86_64")
    dec.add_syscall_exit(fmts["syscalls_sys_exit_mlock2"], "mlock2", "x86_64")
    dec.add_task_newtask(fmts["task_task_newtask"])
    dec.add_task_rename(fmts["task_task_rename"])
    dec.add_sched_process_exec(fmts["sched_sched_process_exec"])
    dec.add_sched_process_exit(fmts["sched_sched_process_exit"])
    return dec, fmts


def test_format_files_of_this_kernel():
    fmts = formats()
    mlock2 = fmts["syscalls_sys_enter_mlock2"]
    assert mlock2.name == "sys_enter_mlock2"
    assert [(f.name, f.offset, f.size) for f in mlock2.own_fields()] == [
        ("__syscall_nr", 8, 4), ("start", 16, 8), ("len", 24, 8), ("flags", 32, 8)]
    rename = fmts["task_task_rename"].by_name
    assert (rename["newcomm"].array, rename["newcomm"].size) == (16, 16)
    exec_ = fmts["sched_sched_process_exec"].by_name["filename"]
    assert exec_.data_loc and exec_.ctype == "char[]"
    layout = ringbuf.parse_header_page(fixture_text("header_page"))
    assert (layout.commit_offset, layout.commit_size, layout.data_offset, layout.page_size) \
        == (8, 8, 16, 4096)


def test_a_real_page_of_this_kernel():
    """A page read from trace_pipe_raw while scripts/workload.py ran (renamed "hello")."""
    dec, _ = decoder()
    with open(os.path.join(RINGBUF, "page-6.18-workload.bin"), "rb") as handle:
        page = handle.read()
    records, missed, last_ts = dec.decode(page, 0)
    assert missed is None and dec.unknown == 0 and dec.bad == 0
    kinds = [(getattr(r, "kind"), getattr(r, "comm", None) if isinstance(r, decode.TaskRecord)
              else r.name) for r in records]
    assert kinds == [
        (decode.NEWTASK, b"python3"), (decode.RENAME, b"python3"), (decode.EXEC, None),
        (decode.RENAME, b"hello"), ("entry", "mlock2"), ("exit", "mlock2"),
        ("entry", "mlock2"), ("exit", "mlock2"), (decode.TASK_EXIT, b"hello")]
    child = records[0].pid
    assert all(r.tid == child for r in records[1:])        # everything after the fork
    assert records[2].filename.endswith(b"/bin/python3") and records[2].old_pid == child
    assert records[4].args[1:] == (8192, 1) and records[5].ret == 0
    assert records[6].args[2] == 99 and records[7].ret == -22
    assert records[8].group_dead is True
    stamps = [r.ts_ns for r in records]
    assert stamps == sorted(stamps) and last_ts == stamps[-1]


# -- synthetic pages, written the way the kernel's ring buffer writes them -------------

def event(delta, payload):
    """One data event: a short one (type_len = length/4) or a long one (type_len 0)."""
    payload = payload + b"\0" * (-len(payload) % 4)
    if len(payload) <= 28 * 4:
        return struct.pack("<I", (delta << 5) | (len(payload) // 4)) + payload
    return struct.pack("<II", delta << 5, len(payload) + 4) + payload


def time_extend(delta):
    return struct.pack("<II", ((delta & ((1 << 27) - 1)) << 5) | 30, delta >> 27)


def page(timestamp, body, missed=None, size=4096):
    commit = len(body)
    tail = b""
    if missed is not None:
        commit |= ringbuf.RB_MISSED_EVENTS
        if missed >= 0:
            commit |= ringbuf.RB_MISSED_STORED
            tail = struct.pack("<Q", missed)
    data = struct.pack("<Qq", timestamp, commit) + body + tail
    return data + b"\0" * (size - len(data))


def rename(fmt, tid, pid, old, new):
    return struct.pack("<HBBii16s16sh", fmt.id, 0, 0, tid, pid, old, new, 0)


def test_time_extend_long_event_padding_and_missed_count():
    dec, fmts = decoder()
    ren = fmts["task_task_rename"]
    body = (event(5, rename(ren, 10, 10, b"a", b"b"))
            + time_extend(1 << 40)                                  # a long pause
            + event(7, rename(ren, 11, 11, b"c", b"d") + b"x" * 200)  # a long record
            + struct.pack("<II", (3 << 5) | 29, 20) + b"\0" * 16     # a discarded event
            + event(1, rename(ren, 12, 12, b"e", b"f")))
    records, missed, _ = dec.decode(page(1000, body, missed=42), 3)
    assert missed == 42
    assert [(r.ts_ns, r.pid, r.comm, r.cpu) for r in records] == [
        (1005, 10, b"b", 3), (1005 + (1 << 40) + 7, 11, b"d", 3),
        (1005 + (1 << 40) + 7 + 3 + 1, 12, b"f", 3)]
    _, missed, _ = dec.decode(page(1000, body, missed=-1), 0)
    assert missed == -1                                              # lost, count unknown


def test_unused_page_tail_and_unknown_ids_are_counted_not_guessed():
    dec, fmts = decoder()
    body = event(1, struct.pack("<HBBi", 65000, 0, 0, 5) + b"\0" * 8)
    records, _, _ = dec.decode(page(0, body), 0)
    assert records == [] and dec.unknown == 1
    assert dec.decode(page(0, b""), 0)[0] == []


@pytest.mark.parametrize("comm", [b"x-1 (1) [000] .", b"evil\nil-1 [000]", b"\xff\xfe\x80bin",
                                  b"a\x00hidden", b"123456789012345", b" lead", b"\n\n"])
def test_hostile_comms_are_exact_in_fixed_fields(comm):
    dec, fmts = decoder()
    records, _, _ = dec.decode(page(0, event(1, rename(fmts["task_task_rename"], 7, 7, b"old",
                                                       comm))), 0)
    assert records[0].comm == comm.split(b"\0")[0] and records[0].pid == 7


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=4200))
def test_arbitrary_bytes_never_raise_anything_but_a_page_error(data):
    dec, _ = decoder()
    try:
        records, _, _ = dec.decode(data, 0)
    except ringbuf.RingBufferError:
        return
    assert isinstance(records, list)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 4095), st.integers(0, 255))
def test_a_corrupted_real_page_never_raises_anything_but_a_page_error(position, value):
    dec, _ = decoder()
    with open(os.path.join(RINGBUF, "page-6.18-workload.bin"), "rb") as handle:
        data = bytearray(handle.read())
    data[position] = value
    try:
        dec.decode(bytes(data), 0)
    except ringbuf.RingBufferError:
        pass


def test_format_file_errors():
    with pytest.raises(ringbuf.RingBufferError):
        ringbuf.parse_format("name: x\nformat:\n")
    with pytest.raises(ringbuf.RingBufferError):
        ringbuf.parse_header_page("nothing here")
