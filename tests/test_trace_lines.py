"""trace_pipe line parsing: every column layout the kernels print, kprobe forms, and comms
chosen by an adversary (property-tested against a model of trace_print_context)."""

import pytest
from hypothesis import given, settings, strategies as st

from mlockaudit.tracefs.lines import (ENTRY, EXIT, LOST, LineParser, TraceLineError,
                                      parse_event_text, parse_line)
from mlockaudit.tracefs.pairing import Pairer


def kernel_line(comm, pid, text, tgid=None, cpu=1, ts="534.484168", layout="6.x"):
    """What trace_print_context() + the event print for a record, per kernel layout."""
    if layout == "3.10":            # %-5d pid, no tgid column, 4 flag chars
        head = b"%16s-%-5d [%03d] .... " % (comm, pid, cpu)
    elif layout == "4.14":          # (%5d) tgid
        head = b"%16s-%-5d (%5s) [%03d] d..1 " % (comm, pid, b"-----" if tgid is None
                                                   else b"%d" % tgid, cpu)
    else:                           # 5.9+: %-7d pid, (%7d) tgid, 5 flag chars
        head = b"%16s-%-7d (%7s) [%03d] ..... " % (comm, pid, b"-------" if tgid is None
                                                    else b"%d" % tgid, cpu)
    return head + b"%12s: " % ts.encode() + text


ENTRY_TEXT = b"sys_mlock2(start: 0x7f4e48dc8000, len: 0x2000, flags: 1)"
EXIT_TEXT = b"sys_mlock2 -> 0xffffffffffffffea"


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


comm_bytes = st.binary(min_size=1, max_size=15).filter(lambda b: b"\0" not in b)


def _feed_all(text):
    parser = LineParser()
    records = [r for r in (parser.feed(line) for line in text.split(b"\n")) if r is not None]
    parser.finish()
    return parser, records


def _expected_comm(comm):
    visible = comm.lstrip(b" ")        # %16s padding and leading spaces look the same
    if not visible or visible == b"<...>":
        return None
    return visible.decode("utf-8", "surrogateescape")


@settings(max_examples=400, deadline=None)
@given(comm=comm_bytes, pid=st.integers(1, 4194304), layout=st.sampled_from(["4.14", "6.x"]))
def test_any_comm_gives_true_pid_and_comm(comm, pid, layout):
    text = kernel_line(comm, pid, ENTRY_TEXT, tgid=pid, layout=layout)
    parser, records = _feed_all(text)
    assert len(records) == 1 and parser.rejected == {}
    assert records[0].tid == pid and records[0].tgid == pid
    assert records[0].comm == _expected_comm(comm)


@settings(max_examples=150, deadline=None)
@given(calls=st.lists(st.tuples(comm_bytes, st.integers(1, 99999), st.integers(-4095, 1)),
                      min_size=1, max_size=12))
def test_streams_of_hostile_comms_pair_exactly(calls):
    """Interleaved entry/exit pairs of distinct threads, comms chosen to confuse: every
    call once, credited to its own thread, with its own return value."""
    lines = []
    tids = []
    for index, (comm, pid, ret) in enumerate(calls):
        tid = pid * 100 + index                       # distinct threads
        tids.append(tid)
        lines.append(kernel_line(comm, tid, b"sys_mlock(start: 0x1000, len: 0x%x)" % (index + 1),
                                 tgid=pid))
    for index, (comm, pid, ret) in enumerate(calls):
        lines.append(kernel_line(comm, tids[index], b"sys_mlock -> 0x%x" % (ret & (2**64 - 1)),
                                 tgid=pid))
    parser, records = _feed_all(b"\n".join(lines) + b"\n")
    events = []
    pairer = Pairer(events.append, arch="x86_64")
    for record in records:
        pairer.feed(record)
    pairer.flush()
    assert parser.rejected == {} and pairer.incomplete == 0
    got = sorted((e.tid, e.pid, e.args[1], e.ret, e.comm) for e in events)
    want = sorted((tids[i], pid, i + 1, ret, _expected_comm(comm))
                  for i, (comm, pid, ret) in enumerate(calls))
    assert got == want


def test_probe_plan_and_parse_for_the_munlockall_alias():
    """__x64_sys_munlockall and __ia32_sys_munlockall are one function (__do_sys_munlockall
    in trace lines): probed once, with the syscall number to tell the caller's arch."""
    from mlockaudit.tracefs import probes
    names = {"__x64_sys_munlockall", "__ia32_sys_munlockall", "__do_sys_munlockall",
             "__x64_sys_mlock2", "__ia32_sys_mlock2"}
    addresses = {"__x64_sys_munlockall": b"ffffffff81001000",
                 "__ia32_sys_munlockall": b"ffffffff81001000"}
    plan, notes = probes.plan("g", "x86_64", names, events=["munlockall", "mlock2"],
                              addresses=addresses)
    lines = [p.entry_line for p in plan]
    assert "p:g/munlockall __x64_sys_munlockall orig_ax=+0x78(%di):u32" in lines
    assert not [l for l in lines if "__ia32_sys_munlockall" in l]
    assert any("alias" in note for note in notes)
    assert "p:g/mlock2_ia32 __ia32_sys_mlock2 start=+0x28(%di):x32 len=+0x58(%di):u32 " \
           "flags=+0x60(%di):x32" in lines
    for number, arch in ((152, "x86_64"), (153, "i386")):
        kind, name, _, got_arch, _ = parse_event_text(
            b"munlockall: (__do_sys_munlockall+0x0/0xa0) orig_ax=%d" % number)
        assert (kind, name, got_arch) == (ENTRY, "munlockall", arch)


def test_old_kernel_kprobe_values_without_x_types_are_hex():
    entry = parse_event_text(b"mlock: (SyS_mlock+0x0/0x20) start=7f00 len=1000", bare_hex=True)
    assert entry[2] == (0x7F00, 0x1000)
    ret = parse_event_text(b"mlock_ret: (x+1/2 <- SyS_mlock) ret=-12", bare_hex=True)
    assert ret[2] == -12
