"""Trace records -> calls (tracefs/pairing.py), and the kprobe plan (tracefs/probes.py):
entry and exit paired per thread, hostile comms, the munlockall alias."""

from hypothesis import given, settings, strategies as st

from mlockaudit.tracefs.lines import ENTRY, parse_event_text
from mlockaudit.tracefs.pairing import Pairer


from trace_text import comm_bytes, expected_comm, feed_all, kernel_line



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
    parser, records = feed_all(b"\n".join(lines) + b"\n")
    events = []
    pairer = Pairer(events.append, arch="x86_64")
    for record in records:
        pairer.feed(record)
    pairer.flush()
    assert parser.rejected == {} and pairer.incomplete == 0
    got = sorted((e.tid, e.pid, e.args[1], e.ret, e.comm) for e in events)
    want = sorted((tids[i], pid, i + 1, ret, expected_comm(comm))
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
