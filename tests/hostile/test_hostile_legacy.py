"""Issue #11, legacy layouts: what old kernels print must replay exactly.

Class 1: trace captures without the tgid column (kernels before record-tgid, RHEL 7's
3.10) or with the ``(-------)`` placeholder. Class 2: a 32-bit kernel's exit values.
Class 3: kprobe values of kernels without x-types (bare hex), decided by the capture's
``kernel=`` header, never per value. The inputs are the real tracepoint and kprobe
captures, rewritten to the old layouts the way those kernels print them.
"""

import os
import re

import pytest

from conftest import CAPTURES, expected_calls, load_truth, observed_calls
from mlockaudit.replay import CaptureHeader, X_TYPES_SINCE, replay
from mlockaudit.tracefs.lines import LineParser, parse_event_text
from mlockaudit.tracefs.pairing import Pairer

TRACEPOINT = os.path.join(CAPTURES, "tracepoint.trace")
KPROBE = os.path.join(CAPTURES, "kprobe.trace")

# The context trace_print_context() writes on 5.x/6.x with record-tgid, after the 16-byte
# comm field: -PID (TGID) [CPU] FLAGS SECS.USECS: TEXT
_CONTEXT_6X = re.compile(rb"-(\d+) +\( *(\d+|-+)\) +\[(\d+)\] +(\S+) +(\d+\.\d+): ([^\n]*)\n")


def records_of(data):
    """(comm field, pid, tgid, cpu, flags, ts, text) of every record of a 6.x capture body. A
    record starts with its 16-byte comm field (which may hold a newline: the record then
    spans two lines) and ends at the newline after its kernel-written text."""
    out = []
    pos = 0
    while pos < len(data):
        match = _CONTEXT_6X.match(data, pos + 16)
        assert match is not None, data[pos:pos + 120]
        out.append((data[pos:pos + 16],) + match.groups())
        pos = match.end()
    return out


def relayout(path, context, header=None, text=lambda text: text):
    """A capture rewritten record by record: ``context(comm, pid, tgid, cpu, ts)`` gives the
    new context, ``text`` may rewrite the event text; the comm bytes stay exactly."""
    with open(path, "rb") as handle:
        first, _, body = handle.read().partition(b"\n")
    lines = [header if header is not None else first]
    for comm, pid, tgid, cpu, _flags, ts, event_text in records_of(body):
        lines.append(context(comm, int(pid), tgid, int(cpu), ts) + text(event_text))
    return b"\n".join(lines) + b"\n"


def layout_3_10(comm, pid, tgid, cpu, ts):
    """3.10's trace_print_context(): ``%16s-%-5d [%03d] `` and 4 flag chars, no tgid."""
    return b"%16s-%-5d [%03d] .... %12s: " % (comm, pid, cpu, ts)


def layout_placeholder(comm, pid, tgid, cpu, ts):
    """5.x/6.x with record-tgid when the tgid is not in the map: ``(-------)``."""
    return b"%16s-%-7d (-------) [%03d] ..... %12s: " % (comm, pid, cpu, ts)


def truth_calls(name, unknown_pid=False):
    expected = expected_calls(load_truth(os.path.join(CAPTURES, name + ".truth.json")))
    return sorted(((None if unknown_pid else pid), tid, None if comm == b"<...>" else comm,
                   call, args, ret) for pid, tid, comm, call, args, ret in expected)


def replay_bytes(tmp_path, data, name="capture.trace", **kwargs):
    path = tmp_path / name
    path.write_bytes(data)
    events = []
    stats = replay(str(path), events.append, **kwargs)
    return events, stats


# -- class 1: unknown tgid --------------------------------------------------------------

def test_class1_capture_without_tgid_column_replays_every_call(tmp_path):
    """The 3.10 layout of the real tracepoint capture gives the same 198 calls: thread id
    from the pid column, comm, arguments and return as the original; the process id is
    unknown (null), never the tracer's or a guess."""
    header = (b"# mlockaudit-capture: clock=boot epoch_offset_ns=1795714613701236267 "
              b"arch=x86_64 hostname=vm kernel=3.10.0-1160.el7.x86_64")
    events, stats = replay_bytes(tmp_path, relayout(TRACEPOINT, layout_3_10, header))
    assert stats.events == 198 and len(events) == 198
    assert stats.rejected == {} and stats.incomplete == 0
    assert stats.lines == stats.parsed + stats.skipped
    assert observed_calls(events) == truth_calls("tracepoint", unknown_pid=True)
    assert all(event.pid is None and event.tid is not None for event in events)
    assert all(event.timestamp > 1.7e18 for event in events)


def test_class1_tgid_placeholder_replays_every_call(tmp_path):
    events, stats = replay_bytes(tmp_path, relayout(TRACEPOINT, layout_placeholder))
    assert stats.events == 198 and stats.rejected == {}
    assert observed_calls(events) == truth_calls("tracepoint", unknown_pid=True)


def test_class1_unknown_tgid_shows_thread_and_null_process_in_tracee_json(tmp_path):
    import json
    from mlockaudit.formats.tracee import format_event
    events, _ = replay_bytes(tmp_path, relayout(TRACEPOINT, layout_3_10))
    shown = json.loads(format_event(events[0]))
    assert shown["hostProcessId"] is None and shown["hostThreadId"] == events[0].tid


@pytest.mark.parametrize("format_name", ["tracee", "ecs", "cef", "leef"])
def test_class1_unknown_tgid_and_comm_formats_as_one_valid_event(tmp_path, format_name):
    """Found by scripts/fuzz ecs: a call with neither tgid nor comm (a ``<...>`` comm in the
    3.10 layout) made ECS write ``"process":{,"thread":...}``."""
    import json
    from mlockaudit.formats import get_formatter
    events, _ = replay_bytes(tmp_path, relayout(TRACEPOINT, layout_3_10))
    anonymous = [event for event in events if event.pid is None and event.comm is None]
    assert anonymous
    for event in anonymous:
        message = get_formatter(format_name)(event)
        if format_name in ("tracee", "ecs"):
            shown = json.loads(message)
            if format_name == "ecs":
                assert shown["process"] == {"thread": {"id": event.tid}}
        assert "\n" not in message


def test_class1_the_tracers_own_pid_is_excluded_only_live():
    parser = LineParser()
    line = layout_3_10(b"mlockaudit", 4242, None, 0, b"1.000000") + \
        b"sys_mlock(start: 0x1000, len: 0x1000)"
    exit_line = layout_3_10(b"mlockaudit", 4242, None, 0, b"1.000001") + b"sys_mlock -> 0x0"
    records = [parser.feed(line), parser.feed(exit_line)]
    replayed, live = [], []
    for events, own_pid in ((replayed, None), (live, 4242)):
        pairer = Pairer(events.append, own_pid=own_pid)
        for record in records:
            pairer.feed(record)
        pairer.flush()
    assert len(replayed) == 1 and replayed[0].tid == 4242 and replayed[0].pid is None
    assert len(live) == 1          # live: the unknown tgid is not the tracer's own either
    tgid_known = parser.feed(b"      mlockaudit-4242    (   4242) [000] ..... "
                             b"    1.000002: sys_mlock(start: 0x1000, len: 0x1000)")
    pairer = Pairer(live.append, own_pid=4242)
    pairer.feed(tgid_known)
    pairer.flush()
    assert len(live) == 1 and pairer.foreign == 1      # its own calls: never shown


# -- class 2: 32-bit kernels --------------------------------------------------------------

def exit_in_32_bits(text):
    """A 32-bit kernel's ``sys_NAME -> 0x%lx``: the return as a 32-bit unsigned long."""
    return re.sub(rb"-> 0x([0-9a-f]+)",
                  lambda match: b"-> 0x%x" % (int(match.group(1), 16) & 0xFFFFFFFF), text)


def test_class2_32bit_kernel_exit_value_reads_negative(tmp_path):
    """An i386 kernel prints the unsigned long return in 32 bits: 0xffffffea is -22."""
    header = (b"# mlockaudit-capture: clock=boot epoch_offset_ns=1795714613701236267 "
              b"arch=i686 hostname=vm kernel=5.10.0-30-686")
    data = relayout(TRACEPOINT, layout_placeholder, header, text=exit_in_32_bits)
    assert b"sys_mlock2 -> 0xffffffea" in data
    events, stats = replay_bytes(tmp_path, data)
    assert stats.rejected == {}
    assert observed_calls(events) == truth_calls("tracepoint", unknown_pid=True)
    failed = [event for event in events if event.ret is not None and event.ret < 0]
    assert len(failed) > 50 and {event.outcome for event in failed} == {"failure"}
    assert -22 in {event.ret for event in failed}
    assert not [event for event in events if event.ret is not None and event.ret > 0xFFFF]


def test_class2_long_bits_header_decides_over_the_arch():
    assert CaptureHeader(b"# mlockaudit-capture: arch=x86_64 long_bits=32").long_bits == 32
    assert CaptureHeader(b"# mlockaudit-capture: arch=armv7l").long_bits == 32
    assert CaptureHeader(b"# mlockaudit-capture: arch=aarch64").long_bits == 64
    assert CaptureHeader().long_bits == 64                  # no header: 64-bit assumed


def test_class2_32bit_failures_survive_failures_only(tmp_path):
    from mlockaudit.filters import EventFilter
    header = b"# mlockaudit-capture: arch=i686 long_bits=32"
    events, _ = replay_bytes(tmp_path, relayout(TRACEPOINT, layout_placeholder, header,
                                                text=exit_in_32_bits))
    kept = [event for event in events if EventFilter(failures_only=True).accepts(event)]
    truth = [call for call in truth_calls("tracepoint", True) if call[5] < 0]
    assert len(kept) == len(truth) and all(event.ret < 0 for event in kept)


def test_class2_64bit_kernel_keeps_large_values_unsigned_until_bit_63():
    pairer_events = []
    pairer = Pairer(pairer_events.append)
    parser = LineParser()
    for text in (b"sys_mlock(start: 0x1000, len: 0x1000)", b"sys_mlock -> 0xffffffea"):
        pairer.feed(parser.feed(layout_placeholder(b"x", 7, None, 0, b"1.000000") + text))
    assert pairer_events[0].ret == 0xFFFFFFEA           # a 64-bit long: not negative


# -- class 3: kprobes without x-types -----------------------------------------------------

def bare_hex_values(text):
    """What a kernel without x-types prints for the capture's probes: u-types as bare hex
    (%llx/%lx), the s64 return in decimal."""
    def to_hex(match):
        key, value = match.group(1), match.group(2)
        number = int(value, 16) if value.startswith(b"0x") else int(value)
        return b"%s=%x" % (key, number)
    return re.sub(rb"\b(start|len|flags|orig_ax)=(0x[0-9a-f]+|\d+)", to_hex, text)


def test_class3_kprobe_values_without_x_types_follow_the_kernel_header(tmp_path):
    header = (b"# mlockaudit-capture: clock=boot epoch_offset_ns=1795715991171209524 "
              b"arch=x86_64 hostname=mlockaudit-vm kernel=4.4.0-21-generic")
    data = relayout(KPROBE, layout_placeholder, header, text=bare_hex_values)
    assert b"start=7f5d99ee7000 len=2000 flags=1" in data        # as such a kernel prints
    events, stats = replay_bytes(tmp_path, data)
    assert stats.rejected == {} and stats.events == 198
    assert observed_calls(events) == truth_calls("kprobe", unknown_pid=True)


def test_class3_x_types_header_overrides_the_version(tmp_path):
    header = b"# mlockaudit-capture: kernel=4.4.0-21-generic x_types=1"
    events, stats = replay_bytes(tmp_path, relayout(KPROBE, layout_placeholder, header))
    assert stats.rejected == {} and observed_calls(events) == truth_calls("kprobe", True)


def test_class3_new_kernel_header_reads_decimal_u_types(tmp_path):
    """The real 6.1 capture (x-types, decimal len) stays exact; the same text under an old
    kernel's header is read as that kernel printed it, never guessed per value."""
    events, stats = replay_bytes(tmp_path, open(KPROBE, "rb").read())
    lens = {event.args[1] for event in events if event.name == "mlock2"}
    assert 8192 in lens and stats.rejected == {}
    assert CaptureHeader(b"# mlockaudit-capture: kernel=4.8.17").bare_hex
    assert not CaptureHeader(b"# mlockaudit-capture: kernel=%d.%d.0" % X_TYPES_SINCE).bare_hex
    assert not CaptureHeader().bare_hex                   # no header: x-types assumed


def test_class3_bare_hex_is_per_kernel_not_per_value():
    # 'len=2000' is 0x2000 on an old kernel and 2000 on a new one: the same text, the
    # kernel decides; a hex-looking value on a new kernel is rejected, not guessed
    old = parse_event_text(b"mlock: (SyS_mlock+0x0/0x20) start=7f00 len=2000", bare_hex=True)
    new = parse_event_text(b"mlock: (SyS_mlock+0x0/0x20) start=0x7f00 len=2000")
    assert old[2] == (0x7F00, 0x2000) and new[2] == (0x7F00, 2000)
    with pytest.raises(ValueError):
        parse_event_text(b"mlock: (SyS_mlock+0x0/0x20) start=7f00 len=2000")
