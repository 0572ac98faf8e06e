"""trace_pipe line parsing: every column layout the kernels print, kprobe forms, and comms
chosen by an adversary (property-tested against a model of trace_print_context)."""

import pytest
from hypothesis import given, settings, strategies as st

from mlockaudit.tracefs.lines import (ENTRY, EXIT, LOST, LineParser, TraceLineError,
                                      parse_event_text, parse_line)


from trace_text import ENTRY_TEXT, EXIT_TEXT, comm_bytes, expected_comm, feed_all, kernel_line



@pytest.mark.parametrize("layout", ["3.10", "4.14", "6.x"])
def test_layouts(layout):
    tgid = None if layout == "3.10" else 4935
    record = parse_line(kernel_line(b"python3", 4936, ENTRY_TEXT, tgid=tgid, layout=layout))
    assert (record.kind, record.name, record.tid, record.tgid, record.comm) == (
        ENTRY, "mlock2", 4936, tgid, "python3")
    assert record.args == (0x7F4E48DC8000, 0x2000, 1)
    assert record.ts_ns == 534484168000 and record.cpu == 1


def test_unknown_tgid_and_comm():
    record = parse_line(kernel_line(b"<...>", 77, EXIT_TEXT, tgid=None))
    assert record.comm is None and record.tgid is None and record.kind == EXIT
    assert record.ret == 0xFFFFFFFFFFFFFFEA


def test_old_kernels_print_hex_without_prefix_new_ones_small_values_bare():
    # <= 6.17: "%s: %lx"; 6.18: values < 10 bare, others 0x-prefixed. Both are base 16.
    old = parse_event_text(b"sys_mlock2(start: 7f4e48dc8000, len: 2000, flags: 63)")
    new = parse_event_text(b"sys_mlock2(start: 0x7f4e48dc8000, len: 0x2000, flags: 0x63)")
    assert old[2] == new[2] == (0x7F4E48DC8000, 0x2000, 99)
    assert parse_event_text(b"sys_munlockall()") == (ENTRY, "munlockall", (), None, "tracepoint")
    assert parse_event_text(b"sys_mlockall(flags: 3) ")[2] == (3,)   # trailing space


def test_kprobe_lines_from_debian_6_1():
    # seen on Debian's 6.1 kernel (KERNEL_NOTES), padding stripped by the copy
    entry = parse_line(b"storm-129     [000] .....     3.548591: mlock2: "
                       b"(__x64_sys_mlock2+0x0/0x40) start=0x7f4b1dbfc000 len=8192 flags=0x1")
    assert (entry.kind, entry.name, entry.tid, entry.comm, entry.arch, entry.probe) == (
        ENTRY, "mlock2", 129, "storm", "x86_64", "kprobe")
    assert entry.args == (0x7F4B1DBFC000, 8192, 1)
    ret = parse_line(b"           storm-129     [000] .....     3.548601: mlock2_ret: "
                     b"(do_syscall_64+0x3b/0x90 <- __x64_sys_mlock2) ret=-22")
    assert (ret.kind, ret.name, ret.ret, ret.arch) == (EXIT, "mlock2", -22, "x86_64")


@pytest.mark.parametrize("symbol,name,arch", [
    (b"__ia32_sys_mlock2", "mlock2", "i386"), (b"SyS_mlockall", "mlockall", None),
    (b"sys_munlock", "munlock", None), (b"__arm64_sys_mlock", "mlock", "aarch64"),
    (b"__do_sys_munlockall", "munlockall", None)])
def test_kprobe_symbols(symbol, name, arch):
    kind, got_name, _, got_arch, _ = parse_event_text(b"p1: (" + symbol + b"+0x0/0x20) len=1")
    assert (kind, got_name, got_arch) == (ENTRY, name, arch)


def test_lost_line():
    record = parse_line(b"CPU:1 [LOST 1234 EVENTS]")
    assert (record.kind, record.cpu, record.lost) == (LOST, 1, 1234)


def test_forged_context_inside_comm_does_not_win():
    # the comm holds a complete-looking context; the true pid is the one after byte 16
    line = kernel_line(b"x-1 (1) [000] .", 4242, ENTRY_TEXT, tgid=4242)
    record = parse_line(line)
    assert (record.tid, record.tgid, record.comm) == (4242, 4242, "x-1 (1) [000] .")
    # and without the left padding (a stripped copy), the rightmost context still wins
    record = parse_line(line.lstrip())
    assert (record.tid, record.comm) == (4242, "x-1 (1) [000] .")


def test_newline_in_comm_joins_two_lines():
    parser = LineParser()
    text = kernel_line(b"evil\nil-1 [000]", 1880, ENTRY_TEXT, tgid=1880)
    first, second = text.split(b"\n")
    assert parser.feed(first) is None                 # carried, not rejected
    record = parser.feed(second)
    assert (record.tid, record.tgid, record.comm) == (1880, 1880, "evil\nil-1 [000]")
    assert parser.rejected == {} and parser.parsed == 2


def test_garbage_is_counted_not_raised():
    parser = LineParser()
    for line in (b"hello world, this is not a trace line", b"\xff\xfe\x00binary",
                 b"   short", b"           a-1 (1) [000] ..... 1.0: sys_mlock2(start: zz)"):
        assert parser.feed(line) is None
    parser.finish()
    assert sum(parser.rejected.values()) == 4 and parser.parsed == 0


def test_wrong_syntax_raises_trace_line_error():
    with pytest.raises(TraceLineError):
        parse_line(b"not a line")


@settings(max_examples=400, deadline=None)
@given(comm=comm_bytes, pid=st.integers(1, 4194304), layout=st.sampled_from(["4.14", "6.x"]))
def test_any_comm_gives_true_pid_and_comm(comm, pid, layout):
    text = kernel_line(comm, pid, ENTRY_TEXT, tgid=pid, layout=layout)
    parser, records = feed_all(text)
    assert len(records) == 1 and parser.rejected == {}
    assert records[0].tid == pid and records[0].tgid == pid
    assert records[0].comm == expected_comm(comm)
