"""tracefs for the surface beyond the mlock family: the event filters written to the
syscall tracepoints (and kprobes), ring-buffer records decoded from this host's real
format files (tests/fixtures/ringbuf/syscalls_sys_*_{mmap,shmctl,setrlimit,prlimit64}),
the decode-time drop of look-alike exits (including a thread that migrated between CPUs
inside its call), the pairer's predicate and ``--mmap-exits none``."""

import os
import struct


from conftest import FIXTURES
from mlockaudit.tracefs import decode, probes, ringbuf
from mlockaudit.tracefs.eventfilter import filter_expression
from mlockaudit.tracefs.lifecycle import TracefsSetup
from mlockaudit.tracefs.merge import Merger
from mlockaudit.tracefs.pairing import Pairer
from mlockaudit.tracefs.instance import Instance

from tracefs.test_ringbuf import event, page

RINGBUF = os.path.join(FIXTURES, "ringbuf")
CALLS = ("mmap", "shmctl", "setrlimit", "prlimit64")


def fmt(name):
    with open(os.path.join(RINGBUF, "syscalls_%s.format" % name)) as handle:
        return ringbuf.parse_format(handle.read())


def layout():
    with open(os.path.join(RINGBUF, "header_page")) as handle:
        return ringbuf.parse_header_page(handle.read())


def surface_decoder():
    dec = decode.Decoder(layout())
    for call in CALLS:
        dec.add_syscall_enter(fmt("sys_enter_" + call), call, "x86_64", filtered=True)
        dec.add_syscall_exit(fmt("sys_exit_" + call), call, "x86_64", filtered=True)
    return dec


def enter(call, tid, *args):
    f = fmt("sys_enter_" + call)
    nr = {"mmap": 9, "shmctl": 31, "setrlimit": 160, "prlimit64": 302}[call]
    return struct.pack("<HBBii4x", f.id, 0, 0, tid, nr) + struct.pack("<%dQ" % len(args), *args)


def leave(call, tid, ret):
    f = fmt("sys_exit_" + call)
    return struct.pack("<HBBii4xq", f.id, 0, 0, tid, 9, ret)


def test_filters_use_the_tracepoints_field_names():
    assert filter_expression("mmap") == "flags & 0x2000"
    assert filter_expression("shmctl") == "cmd == 11 || cmd == 12"
    assert filter_expression("setrlimit") == "resource == 8"
    assert filter_expression("prlimit64") == "resource == 8 && new_rlim != 0"
    assert filter_expression("shmctl", "arm") == "cmd == 11 || cmd == 12 || cmd == 267 || cmd == 268"
    assert filter_expression("mlock2") is None
    # every name in a filter is a field of this kernel's tracepoint
    for call in CALLS:
        fields = fmt("sys_enter_" + call).by_name
        for word in filter_expression(call).split():
            if word.isidentifier():
                assert word in fields, (call, word)


def test_format_fields_are_the_kernel_argument_names():
    assert [f.name for f in fmt("sys_enter_mmap").own_fields()] == [
        "__syscall_nr", "addr", "len", "prot", "flags", "fd", "off"]
    assert [f.name for f in fmt("sys_enter_prlimit64").own_fields()] == [
        "__syscall_nr", "pid", "resource", "new_rlim", "old_rlim"]
    assert [(f.name, f.size) for f in fmt("sys_exit_mmap").own_fields()] == [
        ("__syscall_nr", 4), ("ret", 8)]


def test_records_of_each_new_tracepoint_decode_with_their_true_values():
    dec = surface_decoder()
    body = b"".join(event(1, payload) for payload in (
        enter("mmap", 42, 0, 8192, 3, 0x2022, 2 ** 64 - 1, 0),
        leave("mmap", 42, 0x7F0000001000),
        enter("shmctl", 42, 5, 11, 0), leave("shmctl", 42, 0),
        enter("setrlimit", 42, 8, 0x7FFD0000), leave("setrlimit", 42, -1),
        enter("prlimit64", 42, 0, 8, 0x7FFD0000, 0), leave("prlimit64", 42, 0)))
    records, _, _ = dec.decode(page(1000, body), 0)
    assert [(r.kind, r.name, r.args, r.ret) for r in records] == [
        ("entry", "mmap", (0, 8192, 3, 0x2022, 2 ** 64 - 1, 0), None),
        ("exit", "mmap", None, 0x7F0000001000),
        ("entry", "shmctl", (5, 11, 0), None), ("exit", "shmctl", None, 0),
        ("entry", "setrlimit", (8, 0x7FFD0000), None), ("exit", "setrlimit", None, -1),
        ("entry", "prlimit64", (0, 8, 0x7FFD0000, 0), None), ("exit", "prlimit64", None, 0)]
    assert dec.bad == 0 and dec.armed == {} and dec.unarmed == []


def test_plain_mmap_exits_are_dropped_before_a_record_exists():
    dec = surface_decoder()
    body = b"".join(event(1, leave("mmap", tid, 0x7F0000000000 + tid)) for tid in range(50))
    records, _, _ = dec.decode(page(1000, body), 0)
    assert records == [] and dec.bad == 0 and len(dec.unarmed) == 50
    assert dec.resolve_exits(watermark=10 ** 9) == [] and dec.exits_dropped == 50
    assert dec.unarmed == []


def test_a_thread_that_migrated_inside_its_call_keeps_its_return():
    """Entry on CPU 1, exit on CPU 0; CPU 0 is read first: the exit waits for the entry."""
    dec = surface_decoder()
    merger = Merger(margin_ns=0)
    exit_page = page(2000, event(0, leave("mmap", 7, 0x7F0000002000))
                     + event(5, leave("mmap", 8, 0x7F0000003000)))     # a look-alike's
    entry_page = page(1000, event(0, enter("mmap", 7, 0, 4096, 3, 0x2022, 0, 0)))
    for cpu, data in ((0, exit_page), (1, entry_page)):
        records, _, last = dec.decode(data, cpu)
        merger.add(cpu, records, True, 3000, last)
    for cpu, record in dec.resolve_exits(merger.watermark()):
        merger.insert(cpu, record)
    events = []
    pairer = Pairer(events.append, arch="x86_64")
    for record in merger.release():
        pairer.feed(record)
    assert [(e.name, e.tid, e.args[3], e.ret) for e in events] == [
        ("mmap", 7, 0x2022, 0x7F0000002000)]
    assert dec.exits_dropped == 1 and dec.armed == {}


def test_an_exit_newer_than_the_watermark_waits_for_the_next_pump():
    dec = surface_decoder()
    records, _, _ = dec.decode(page(5000, event(0, leave("mmap", 7, 1))), 0)
    assert dec.resolve_exits(watermark=4000) == [] and len(dec.unarmed) == 1
    dec.decode(page(4500, event(0, enter("mmap", 7, 0, 4096, 3, 0x2000, 0, 0))), 1)
    found = dec.resolve_exits(watermark=6000)
    assert [(cpu, r.tid, r.ret) for cpu, r in found] == [(0, 7, 1)]
    # an exit older than the thread's armed entry is an earlier call's: not this one's
    dec.decode(page(9000, event(0, enter("mmap", 9, 0, 1, 3, 0x2000, 0, 0))), 1)
    dec.decode(page(8000, event(0, leave("mmap", 9, 5))), 0)
    assert dec.resolve_exits(watermark=10000) == [] and dec.armed == {9: 9000}


def test_pairer_applies_the_predicate_and_drops_lone_exits():
    from mlockaudit.tracefs.lines import ENTRY, EXIT, TraceRecord
    events = []
    pairer = Pairer(events.append, arch="x86_64")

    def entry(name, tid, ts, args):
        pairer.feed(TraceRecord(ENTRY, name, tid, tid, None, 0, ts, args))

    def leave_(name, tid, ts, ret):
        pairer.feed(TraceRecord(EXIT, name, tid, tid, None, 0, ts, None, ret))
    entry("mmap", 1, 10, (0, 4096, 3, 0x22, 0, 0))            # a look-alike
    leave_("mmap", 1, 11, 0x1000)
    leave_("mmap", 1, 12, 0x2000)                              # a lone exit
    entry("prlimit64", 1, 13, (0, 8, 0, 0x7FFD))               # getrlimit
    leave_("prlimit64", 1, 14, 0)
    entry("prlimit64", 1, 15, (0, 8, 0x7FFD, 0))
    leave_("prlimit64", 1, 16, 0)
    leave_("mlock", 2, 17, 0)                                  # the family: still reported
    pairer.flush()
    assert [(e.name, e.ret, e.extra.get("incomplete")) for e in events] == [
        ("prlimit64", 0, None), ("mlock", 0, True)]
    assert pairer.lookalikes == 2 and pairer.unpaired_exits == 3     # (both look-alikes' too)


def test_mmap_exits_none_emits_at_the_entry_with_the_return_unknown():
    from mlockaudit.tracefs.lines import ENTRY, TraceRecord
    events = []
    pairer = Pairer(events.append, arch="x86_64", no_exit=("mmap",))
    pairer.feed(TraceRecord(ENTRY, "mmap", 3, 3, None, 0, 10, (0, 4096, 3, 0x2022, 0, 0)))
    assert pairer.in_flight == 0
    (event_,) = events
    assert event_.ret is None and event_.outcome == "unknown"
    assert event_.extra["exitTraced"] is False and "incomplete" not in event_.extra
    assert pairer.incomplete == 0


def test_kprobe_lines_fetch_six_arguments_into_the_kernel_names():
    names = {"__x64_sys_mmap", "__x64_sys_shmctl", "__x64_sys_setrlimit",
             "__x64_sys_prlimit64", "__ia32_sys_mmap_pgoff"}
    plan, notes = probes.plan("g", "x86_64", names, events=list(CALLS))
    lines = {p.name: p for p in plan}
    assert lines["mmap"].entry_line == (
        "p:g/mmap __x64_sys_mmap addr=+0x70(%di):x64 len=+0x68(%di):u64 prot=+0x60(%di):u64 "
        "flags=+0x38(%di):u64 fd=+0x48(%di):u64 off=+0x40(%di):u64")
    assert lines["prlimit64"].entry_line == (
        "p:g/prlimit64 __x64_sys_prlimit64 pid=+0x70(%di):u64 resource=+0x68(%di):u64 "
        "new_rlim=+0x60(%di):x64 old_rlim=+0x38(%di):x64")
    assert all(p.arch == "x86_64" for p in plan)             # no compat probes for these
    assert probes.field_names("mmap") == ["addr", "len", "prot", "flags", "fd", "off"]
    no_ret, _ = probes.plan("g", "x86_64", names, events=["mmap"], no_return=("mmap",))
    assert no_ret[0].events == ("mmap",) and not no_ret[0].with_return
    old, _ = probes.plan("g", "x86_64", {"SyS_mmap"}, events=["mmap"], x_types=False)
    assert "flags=%cx:u64" in old[0].entry_line and "addr=%di:u64" in old[0].entry_line
    arm, _ = probes.plan("g", "aarch64", {"__arm64_sys_mmap"}, events=["mmap"])
    assert "flags=+24(%x0):u64" in arm[0].entry_line


def test_a_filter_is_recorded_before_it_is_written(tmp_path):
    """In a stand-in instance directory (a plain one: the real tracefs is not touched
    here): the state holds the file's content before and what we set."""
    root = str(tmp_path)
    path = tmp_path / "instances" / "mlockaudit_1_1" / "events" / "syscalls" / "sys_enter_mmap"
    path.mkdir(parents=True)
    (path / "filter").write_text("none\n")
    setup = TracefsSetup(None)
    setup.root = root
    setup.instance = Instance(root, "mlockaudit_1_1")
    setup.set_filter("syscalls", "sys_enter_mmap", filter_expression("mmap"))
    assert setup.section["filters"] == {
        "events/syscalls/sys_enter_mmap/filter": {"before": "none", "set": "flags & 0x2000"}}
    assert (path / "filter").read_text() == "flags & 0x2000"


def test_hostile_register_values_decode_and_filter_in_python():
    dec = surface_decoder()
    body = event(0, enter("shmctl", 5, 2 ** 64 - 1, 2 ** 64 - 1, 2 ** 64 - 1)) + \
        event(1, leave("shmctl", 5, -(2 ** 63)))
    records, _, _ = dec.decode(page(0, body), 0)
    assert records[0].args == (2 ** 64 - 1,) * 3 and records[1].ret == -(2 ** 63)
    events = []
    pairer = Pairer(events.append, arch="x86_64")
    for record in records:
        pairer.feed(record)
    assert events == [] and pairer.lookalikes == 1 and pairer.unpaired_exits == 1
