"""Issue #11, property tests: the classes of defects as properties over generated input.

* arbitrary bytes, and the real captures mutated (bytes flipped, cut, spliced, lines
  duplicated or dropped), never raise from replay or from the live parsers (the netlink
  datagram path, the auditd text path, the trace_pipe path);
* every line is counted once: parsed + skipped + rejected == lines, and every event
  counted is emitted;
* a valid record round-trips: what the kernel would print for a call comes back as that
  call;
* events built from fuzzed records format, in every format and syslog framing, as one
  line (JSON formats: one parseable document);
* long lines of any repeated pattern take about the time of the same bytes as ordinary
  lines (ratio, one run).
"""

import json
import os
import struct
import time

from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import CAPTURES
from mlockaudit.audit import records
from mlockaudit.audit.assembler import Assembler
from mlockaudit.audit.records import parse_log_line
from mlockaudit.audit.backend import AuditSource
from mlockaudit.formats import get_formatter
from mlockaudit.replay import ReplayError, replay
from mlockaudit.syscalls import ARCH_AUDIT, SYSCALL_NUMBERS
from mlockaudit.tracefs.lines import LineParser
from mlockaudit.tracefs.pairing import Pairer
from mlockaudit.transports.rfc5424 import Framer

FORMATS = ("tracee", "ecs", "cef", "leef")


def _lines(name):
    with open(os.path.join(CAPTURES, name), "rb") as handle:
        return handle.read().splitlines(True)


AUDIT_LINES = _lines("auditd-raw.log")[:60] + _lines("auditd-enriched.log")[:40]
TRACE_LINES = _lines("tracepoint.trace")[:80] + _lines("kprobe.trace")[:60]
# 150 examples per property in CI; more by hand: MLOCKAUDIT_PROPERTY_EXAMPLES=5000
SETTINGS = settings(max_examples=int(os.environ.get("MLOCKAUDIT_PROPERTY_EXAMPLES", "150")),
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def line_count(data):
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


@st.composite
def mutated(draw, corpus):
    """A run of real lines with some of them damaged the ways files get damaged."""
    start = draw(st.integers(0, len(corpus) - 1))
    lines = list(corpus[start:start + draw(st.integers(1, 30))])
    for _ in range(draw(st.integers(0, 6))):
        index = draw(st.integers(0, len(lines) - 1))
        line = lines[index]
        how = draw(st.sampled_from(["flip", "cut", "insert", "splice", "dup", "drop",
                                    "digits", "hexify"]))
        at = draw(st.integers(0, max(0, len(line) - 1)))
        if how == "flip" and line:
            line = line[:at] + bytes([line[at] ^ draw(st.integers(1, 255))]) + line[at + 1:]
        elif how == "cut":
            line = line[:at]
        elif how == "insert":
            line = line[:at] + draw(st.binary(max_size=20)) + line[at:]
        elif how == "splice":
            other = draw(st.sampled_from(corpus))
            line = line[:at] + other[draw(st.integers(0, len(other))):]
        elif how == "dup":
            lines.insert(index, line)
        elif how == "drop" and len(lines) > 1:
            del lines[index]
            continue
        elif how == "digits":                     # a number the kernel never prints
            line = line[:at] + draw(st.sampled_from([b"-", b"_", b"9" * 25, b"f" * 17,
                                                     b"0x", b" ", b"\x00"])) + line[at:]
        elif how == "hexify":
            line = line.replace(b"=", b"=-", 1)
        lines[index] = line
    return b"".join(lines)


def check_replay(tmp_path, data, source):
    path = tmp_path / "input"
    path.write_bytes(data)
    events = []
    try:
        stats = replay(str(path), events.append, source=source)
    except ReplayError as exc:                  # the two documented refusals (exit 2)
        if data[:2] == b"\x1f\x8b":
            assert "cannot read" in str(exc)      # a (corrupt) gzip file
        else:
            assert source == "auto" and "neither" in str(exc)
        return None
    assert stats.lines == line_count(data)
    assert stats.lines == stats.parsed + stats.skipped + stats.rejected_total
    assert stats.events == len(events)
    for event in events:
        for name in FORMATS:
            message = get_formatter(name)(event)
            assert "\n" not in message and "\r" not in message
    return stats


# -- never raises, every line counted --------------------------------------------------

@SETTINGS
@given(data=st.binary(max_size=4000), source=st.sampled_from(["auto", "audit", "trace"]))
def test_property_arbitrary_bytes_never_raise_from_replay(tmp_path_factory, data, source):
    check_replay(tmp_path_factory.mktemp("b"), data, source)


@SETTINGS
@given(data=mutated(AUDIT_LINES), source=st.sampled_from(["auto", "audit"]))
def test_property_mutated_audit_logs_never_raise_and_count_every_line(tmp_path_factory, data,
                                                                      source):
    check_replay(tmp_path_factory.mktemp("a"), data, source)


@SETTINGS
@given(data=mutated(TRACE_LINES), source=st.sampled_from(["auto", "trace"]))
def test_property_mutated_trace_captures_never_raise_and_count_every_line(tmp_path_factory,
                                                                          data, source):
    check_replay(tmp_path_factory.mktemp("t"), data, source)


class _Batches(object):
    def __init__(self, datagrams):
        self.datagrams = datagrams

    def receive(self):
        batch, self.datagrams = self.datagrams, []
        return batch


def datagram(rtype, payload):
    """A netlink audit message as recv() returns it: 16-byte header, then the payload."""
    return struct.pack("=IHHII", len(payload), rtype, 0, 0, 0) + payload


@SETTINGS
@given(data=mutated(AUDIT_LINES), multicast=st.booleans())
def test_property_live_netlink_path_never_raises(data, multicast):
    datagrams = []
    for line in data.split(b"\n"):
        try:
            rtype, stamp, body, node = parse_log_line(line)
        except records.RecordError:
            payload, rtype = line, 1300
        else:
            payload = b"audit(" + stamp + b"): " + body
            rtype = rtype if rtype.__class__ is int and rtype < 65536 else 1100
        datagrams.append(datagram(rtype, payload))
    events = []
    backend = AuditSource(events.append, session=None)
    backend.mode = "multicast" if multicast else "unicast"
    if multicast:
        backend.feeder.see = backend.gaps.see
    backend.batch = _Batches(datagrams)
    backend.pump()
    backend.assembler.expire(10 ** 9)
    backend.assembler.flush()
    assert backend.assembler.events == len(events)


@SETTINGS
@given(data=mutated(AUDIT_LINES), chunk=st.integers(1, 300))
def test_property_live_text_input_never_raises(tmp_path_factory, data, chunk):
    from mlockaudit.audit.textinput import LogFollower
    path = tmp_path_factory.mktemp("f") / "audit.log"
    path.write_bytes(b"")
    events = []
    backend = AuditSource(events.append, session=None)
    backend.text = LogFollower(str(path))
    with open(str(path), "ab") as handle:
        for offset in range(0, len(data), chunk):           # arriving in pieces
            handle.write(data[offset:offset + chunk])
            handle.flush()
            backend.pump()
    backend.assembler.expire(10 ** 9)
    backend.assembler.flush()
    assert backend.assembler.events == len(events)


@SETTINGS
@given(data=mutated(TRACE_LINES), cut=st.integers(0, 5000), bare_hex=st.booleans(),
       long_bits=st.sampled_from([32, 64]))
def test_property_live_trace_path_never_raises(data, cut, bare_hex, long_bits):
    """What TracefsBackend.pump does with what trace_pipe gave: split, keep the partial
    last line for the next read, parse, pair."""
    parser = LineParser(bare_hex=bare_hex)
    events = []
    pairer = Pairer(events.append, own_pid=os.getpid(), clock_offset_ns=10 ** 18,
                    long_bits=long_bits)
    partial = b""
    for piece in (data[:cut], data[cut:], b"\n"):
        lines = (partial + piece).split(b"\n")
        partial = lines.pop()
        for record in parser.records(lines):
            pairer.feed(record)
    pairer.expire()
    pairer.flush()
    assert pairer.events == len(events)
    assert sum(parser.rejected.values()) + parser.parsed + parser.skipped == data.count(b"\n") + 1


# -- round trips ---------------------------------------------------------------------------

def kernel_untrusted(value):
    """audit_log_untrustedstring(): quoted unless a byte is '"', < 0x21 or > 0x7e; then hex."""
    if any(b == 0x22 or b < 0x21 or b > 0x7E for b in value):
        return value.hex().upper().encode()
    return b'"' + value + b'"'


process_bytes = st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b)


@SETTINGS
@given(arch=st.sampled_from(sorted(SYSCALL_NUMBERS)), name=st.sampled_from(
    ["mlock", "mlock2", "munlock", "mlockall", "munlockall"]),
    regs=st.tuples(*[st.integers(0, 2 ** 64 - 1)] * 4), ret=st.one_of(st.none(), st.integers(
        -4095, 2 ** 31)), pid=st.integers(1, 2 ** 32 - 1), comm=process_bytes, exe=process_bytes,
    sec=st.integers(0, 9223372035), msec=st.integers(0, 999), serial=st.integers(0, 2 ** 32 - 1),
    title=st.binary(min_size=1, max_size=128))
def test_property_valid_audit_record_round_trips(arch, name, regs, ret, pid, comm, exe, sec,
                                                 msec, serial, title):
    stamp = b"%d.%03d:%d" % (sec, msec, serial)
    head = b"arch=%x syscall=%d " % (ARCH_AUDIT[arch], SYSCALL_NUMBERS[arch][name])
    if ret is not None:
        head += b"success=%s exit=%d " % (b"yes" if ret >= 0 else b"no", ret)
    head += b"a0=%x a1=%x a2=%x a3=%x items=0 " % regs
    tail = (b"ppid=1 pid=%d auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 "
            b"sgid=0 fsgid=0 tty=(none) ses=4294967295 comm=%s exe=%s key=\"k\"" % (
                pid, kernel_untrusted(comm[:15]), kernel_untrusted(exe)))
    lines = [b"type=SYSCALL msg=audit(" + stamp + b"): " + head + tail,
             b"type=PROCTITLE msg=audit(" + stamp + b"): proctitle=" + title.hex().upper().encode()]
    events = []
    assembler = Assembler(events.append)
    for line in lines:
        assembler.feed(*parse_log_line(line))
    assert len(events) == 1 and assembler.incomplete == 0
    event = events[0]
    nargs = {"mlock": 2, "mlock2": 3, "munlock": 2, "mlockall": 1, "munlockall": 0}[name]
    assert (event.name, event.arch, event.args, event.ret, event.pid) == (
        name, arch, regs[:nargs], ret, pid)
    assert event.timestamp == sec * 10 ** 9 + msec * 10 ** 6 and event.extra["serial"] == serial
    assert event.comm.encode("utf-8", "surrogateescape") == comm[:15]
    assert event.exe.encode("utf-8", "surrogateescape") == exe
    assert event.process.extra["proctitle"] == title.decode(
        "utf-8", "surrogateescape").rstrip("\0").replace("\0", " ")


@SETTINGS
@given(name=st.sampled_from(["mlock", "mlock2", "munlock", "mlockall", "munlockall"]),
       args=st.tuples(*[st.integers(0, 2 ** 64 - 1)] * 3), ret=st.integers(-4095, 2 ** 31 - 1),
       tid=st.integers(1, 4194304), layout=st.sampled_from(["3.10", "6.x", "stripped"]),
       long_bits=st.sampled_from([32, 64]), old_hex=st.booleans())
def test_property_valid_trace_pair_round_trips(name, args, ret, tid, layout, long_bits,
                                               old_hex):
    names = {"mlock": (b"start", b"len"), "munlock": (b"start", b"len"),
             "mlock2": (b"start", b"len", b"flags"), "mlockall": (b"flags",), "munlockall": ()}
    fields = names[name]
    if long_bits == 32:
        args = tuple(value & 0xFFFFFFFF for value in args)
    width = (1 << long_bits) - 1
    form = b"%s: %x" if old_hex else b"%s: 0x%x"
    entry = b"sys_%s(%s)" % (name.encode(), b", ".join(
        form % (field, value) for field, value in zip(fields, args)))
    exit_text = b"sys_%s -> 0x%x" % (name.encode(), ret & width)

    def context(ts):
        if layout == "3.10":
            return b"%16s-%-5d [%03d] .... %12s: " % (b"comm", tid, 1, ts)
        line = b"%16s-%-7d (%7d) [%03d] ..... %12s: " % (b"comm", tid, tid, 1, ts)
        return line.lstrip() if layout == "stripped" else line
    parser = LineParser()
    events = []
    pairer = Pairer(events.append, long_bits=long_bits)
    for record in parser.records([context(b"1.000000") + entry + b"\n",
                                  context(b"1.000002") + exit_text + b"\n"]):
        pairer.feed(record)
    pairer.flush()
    assert parser.rejected == {} and len(events) == 1 and pairer.incomplete == 0
    event = events[0]
    assert (event.name, event.tid, event.args, event.ret) == (name, tid, args[:len(fields)], ret)
    assert event.pid == (None if layout == "3.10" else tid)


# -- formats over fuzzed events ---------------------------------------------------------

@SETTINGS
@given(data=mutated(AUDIT_LINES + TRACE_LINES), timestamp=st.one_of(
    st.none(), st.integers(-2 ** 80, 2 ** 80)), kind=st.sampled_from(["udp", "tcp", "unix"]))
def test_property_events_from_fuzzed_records_format_as_one_line(data, timestamp, kind):
    events = []
    assembler = Assembler(events.append)
    for line in data.split(b"\n"):
        try:
            assembler.feed(*parse_log_line(line))
        except records.RecordError:
            pass
    assembler.flush()
    parser = LineParser()
    pairer = Pairer(events.append, clock_offset_ns=1)
    for record in parser.records(data.split(b"\n")):
        pairer.feed(record)
    pairer.flush()
    framer = Framer(kind, hostname="h", procid=1)
    for event in events[:20]:
        event.timestamp = timestamp
        for name in FORMATS:
            formatter = get_formatter(name)
            message = formatter(event)
            assert "\n" not in message
            if name in ("tracee", "ecs"):
                json.loads(message)
            framed, _ = framer.frame(message, event, formatter=formatter, limit=2048
                                     if kind == "udp" else None)
            assert b"\n" not in framed


# -- linear time, as a property ---------------------------------------------------------

with open(os.path.join(CAPTURES, "tracepoint.trace"), "rb") as _handle:
    _ORDINARY_TRACE = _handle.read().partition(b"\n")[2]
_ORDINARY_AUDIT = b"".join(_lines("auditd-raw.log"))
_LONG = 256 * 1024


def _seconds(function):
    best = None
    for _ in range(3):
        start = time.perf_counter()
        function()
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unit=st.lists(st.sampled_from([b" ", b"-", b"1", b"(", b")", b"[", b"]", b".", b":",
                                      b"=", b"x", b"0x", b"sys_", b"a", b",", b"\t", b"\"",
                                      b"key=", b"audit(", b"type="]),
                     min_size=1, max_size=8).map(b"".join),
       prefix=st.sampled_from([b"", b"           plain-4749    (   4749) [001] .....",
                               b"type=SYSCALL msg=audit(1.000:1): arch=c000003e syscall=325 "
                               b"success=yes exit=0 a0=1 a1=1 a2=1 a3=0 items=0 subj=x "]))
def test_property_one_long_line_costs_about_the_same_bytes_of_ordinary_lines(unit, prefix):
    line = prefix + unit * (_LONG // len(unit))
    ordinary = (_ORDINARY_TRACE if not prefix.startswith(b"type=") else _ORDINARY_AUDIT)
    ordinary = (ordinary * (len(line) // len(ordinary) + 1))[:len(line)]
    ordinary = ordinary[:ordinary.rfind(b"\n") + 1]
    source = "audit" if prefix.startswith(b"type=") else "trace"

    def parse(data):
        if source == "audit":
            assembler = Assembler(lambda event: None)
            for one in data.split(b"\n"):
                try:
                    assembler.feed(*parse_log_line(one))
                except records.RecordError:
                    pass
            assembler.flush()
        else:
            pairer = Pairer(lambda event: None)
            for record in LineParser().records(data.split(b"\n")):
                pairer.feed(record)
            pairer.flush()
    long_seconds = _seconds(lambda: parse(line))
    ordinary_seconds = _seconds(lambda: parse(ordinary))
    assert long_seconds <= 5.0 * ordinary_seconds + 0.005, (unit, long_seconds,
                                                            ordinary_seconds)
