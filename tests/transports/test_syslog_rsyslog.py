"""Syslog delivery to a real rsyslogd (its own config on loopback, see rsyslogd.py): every
event of a capture arrives exactly once and parses, in every format over every transport;
hostile strings forge nothing; a collector restart loses nothing with the spool; UDP stays
within 2048 bytes; TLS verifies the collector."""

import json
import os
import subprocess
import sys

import pytest

from conftest import CAPTURES, ROOT
from rsyslogd import Rsyslogd, have_rsyslogd
from test_formats_siem import (FIXTURE_EVENTS, HOSTILE, exact, make_event, parse_cef,
                               parse_leef, parse_rfc5424, parse_sd)
from mlockaudit.formats import FORMATS
from mlockaudit.syscalls import FAMILY
from mlockaudit.outputs import OutputOptions, Outputs  # noqa: F401

pytestmark = [pytest.mark.rsyslog]

if not have_rsyslogd():
    pytest.skip("rsyslogd is not installed (scripts/test installs it)", allow_module_level=True)

CAPTURE = os.path.join(CAPTURES, "auditd-raw.log")
FORMAT_NAMES = ("tracee", "ecs", "cef", "leef")
TRANSPORTS = ("tcp", "udp", "tls", "tls-client-cert", "local")


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    daemon = Rsyslogd(tmp_path_factory.mktemp("rsyslog")).start()
    yield daemon
    daemon.stop()


def tls_args(collector, transport):
    if not transport.startswith("tls"):
        return []
    args = ["--tls-ca", collector.certs["ca.pem"]]
    if transport == "tls-client-cert":
        args += ["--tls-cert", collector.certs["client.pem"],
                 "--tls-key", collector.certs["client.key"]]
    return args


def run_replay(*args):
    return subprocess.run([sys.executable, "-m", "mlockaudit", "replay"] + list(args),
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)


def fields_of(format_name, msg):
    """The facts of one event from the message, read back by the reference parsers:
    (name, pid, comm bytes, args, ret, serial)."""
    if format_name == "tracee":
        doc = json.loads(msg)
        ext = doc["mlockaudit"]
        args = tuple(a["value"] if not isinstance(a["value"], str) else int(a["value"], 16)
                     for a in doc["args"])
        return (doc["eventName"], doc["hostProcessId"],
                exact(doc["processName"], ext.get("processNameHex")), args,
                doc["returnValue"], ext["serial"])
    if format_name == "ecs":
        doc = json.loads(msg)
        ext = doc["mlockaudit"]
        args = tuple(v if not isinstance(v, str) else int(v, 16) for v in ext["args"].values())
        return (doc["event"]["code"], doc["process"]["pid"],
                exact(doc["process"]["name"], ext.get("processNameHex")), args,
                ext["returnValue"], doc["event"]["sequence"])
    if format_name == "cef":
        header, ext = parse_cef(msg)
        labelled = {ext[k + "Label"]: ext[k] for k in list(ext) if k + "Label" in ext}
        args = []
        for name in ("addr", "len", "flags"):
            if name in labelled:
                args.append(int(labelled[name], 16) if name == "addr" else int(labelled[name]))
        return (header[4], int(ext["spid"]), exact(ext["sproc"], labelled.get("sprocHex")),
                tuple(args), int(labelled["returnValue"]), int(ext["externalId"]))
    header, attrs = parse_leef(msg)
    args = []
    for name in ("addr", "len", "flags"):
        if name in attrs:
            args.append(int(attrs[name], 16) if name == "addr" else int(attrs[name]))
    return (header[4], int(attrs["pid"]), exact(attrs["comm"], attrs.get("commHex")),
            tuple(args), int(attrs["ret"]), int(attrs["serial"]))


def expected_fields(events):
    out = []
    for event in events:
        args = tuple(v if not isinstance(v, str) else int(v, 16)
                     for _n, _t, v in event.arg_values())
        out.append((event.name, event.pid, event.comm.encode("utf-8", "surrogateescape"), args,
                    event.ret, event.extra["serial"]))
    return sorted(out, key=repr)


def check_delivery(collector, transport, format_name, messages, events):
    """Each event exactly once, parsed, framing as rsyslog saw it."""
    calls = [m for m in messages if m["msgid"] != "stats"] if transport != "local" else messages
    assert len(calls) == len(events)
    got = []
    sequence_ids = []
    for message in calls:
        assert message["app"] == "mlockaudit"
        assert "#0" not in message["raw"] and "#1" not in message["raw"]   # no control byte
        msg = message["msg"]
        if transport == "local":
            assert msg.startswith(" ")             # rsyslog keeps the space after "TAG:"
            msg = msg[1:]
        else:
            assert message["msgid"] in FAMILY and message["msgid"] in msg
            sd = parse_sd(message["sd"])
            assert [element[0] for element in sd] == ["meta", "mlockaudit@32473"]
            sequence_ids.append(int(sd[0][1]["sequenceId"]))
            assert int(message["pri"]) in (10 * 8 + 6, 10 * 8 + 4)
        facts = fields_of(format_name, msg)
        if transport != "local":
            assert facts[0] == message["msgid"]
        got.append(facts)
    assert sorted(got, key=repr) == expected_fields(events)
    if sequence_ids:
        assert sorted(sequence_ids) == list(range(1, len(events) + 1))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("format_name", FORMAT_NAMES)
def test_every_event_arrives_once_parsed(collector, format_name, transport):
    if transport.startswith("tls") and not collector.tls:
        pytest.skip("rsyslog-gnutls is not installed")
    before = len(collector.messages(transport))
    result = run_replay(CAPTURE, "-o", collector.target(transport), "-f", format_name,
                        "--stats-interval", "0", *tls_args(collector, transport))
    assert result.returncode == 0, result.stderr.decode()
    assert b"sent=198 lost=0" in result.stderr
    messages = collector.wait_for(transport, before + 198)[before:]
    assert len({m["procid"] for m in messages}) == 1      # one sender: the replay
    check_delivery(collector, transport, format_name, messages, FIXTURE_EVENTS)


def test_hostile_strings_forge_nothing(collector):
    """comm, exe and command line bytes chosen to break each format arrive as one message
    each, with exactly the fields of a plain event, and the exact bytes recoverable."""
    events = [make_event(comm=comm[:15], exe=b"/bin/" + comm, proctitle=comm + b" -x",
                         tid=index) for index, comm in enumerate(HOSTILE)]
    plain_cef = set(parse_cef(FORMATS["cef"](make_event()))[1])
    for transport in ("tcp", "udp", "local"):
        for format_name in FORMAT_NAMES:
            before = len(collector.messages(transport))
            outputs = Outputs([collector.target(transport)], format_name,
                              OutputOptions(stats_interval=0))
            for event in events:
                outputs.emit(event)
            outputs.close()
            assert outputs.stats()["lost"] == 0
            messages = collector.wait_for(transport, before + len(events))[before:]
            assert len(messages) == len(events), (transport, format_name)
            by_tid = {}
            for message in messages:
                assert "#0" not in message["raw"] and "#1" not in message["raw"]
                msg = message["msg"][1:] if transport == "local" else message["msg"]
                if format_name == "tracee":
                    doc = json.loads(msg)
                    tid = doc["hostThreadId"]
                    comm = exact(doc["processName"], doc["mlockaudit"].get("processNameHex"))
                elif format_name == "ecs":
                    doc = json.loads(msg)
                    tid = doc["process"]["thread"]["id"]
                    comm = exact(doc["process"]["name"], doc["mlockaudit"].get("processNameHex"))
                elif format_name == "cef":
                    _header, ext = parse_cef(msg)
                    extra_keys = {"flexString1", "flexString1Label", "flexString2",
                                  "flexString2Label"}
                    assert set(ext) - extra_keys == plain_cef - extra_keys
                    labelled = {ext[k + "Label"]: ext[k] for k in list(ext) if k + "Label" in ext}
                    tid = int(labelled["tid"])
                    comm = exact(ext["sproc"], labelled.get("sprocHex"))
                else:
                    _header, attrs = parse_leef(msg)
                    tid = int(attrs["tid"])
                    comm = exact(attrs["comm"], attrs.get("commHex"))
                if transport != "local":
                    sd = parse_sd(message["sd"])
                    assert [element[0] for element in sd] == ["meta", "mlockaudit@32473"]
                    params = sd[1][1]
                    assert exact(params["comm"], params.get("commHex")) == comm
                by_tid[tid] = comm
            assert by_tid == {index: comm[:15] for index, comm in enumerate(HOSTILE)}


def test_collector_restart_loses_nothing_with_the_spool(collector, tmp_path):
    """rsyslogd stops while events keep coming and starts again: with the spool every
    event arrives, once."""
    before = len(collector.messages("tcp"))
    options = OutputOptions(spool_dir=str(tmp_path / "spool"), stats_interval=0,
                            reconnect_min=0.1, reconnect_max=0.5, flush_timeout=30)
    outputs = Outputs([collector.target("tcp")], "cef", options)
    transport = outputs.transports[0]
    events = FIXTURE_EVENTS
    try:
        for event in events[:60]:
            outputs.emit(event)
        collector.wait_for("tcp", before + 60)
        collector.stop()
        for event in events[60:130]:                  # the collector is down
            outputs.emit(event)
        wait_until(lambda: transport.stats()["spool_depth"] >= 70)
        assert transport.stats()["connected"] is False
        collector.start()
        for event in events[130:]:
            outputs.emit(event)
        wait_until(lambda: transport.stats()["sent"] >= len(events))
    finally:
        outputs.close()
    stats = outputs.stats()
    assert stats["lost"] == 0 and stats["sent"] == len(events) and stats["spooled"] >= 70
    assert stats["reconnects"] >= 1
    messages = collector.wait_for("tcp", before + len(events))[before:]
    check_delivery(collector, "tcp", "cef", messages, events)


def test_spool_outlives_the_sender(collector, tmp_path):
    """Collector down during a whole replay: the events wait in the spool, and the next
    run sends them first, each once."""
    spool = str(tmp_path / "spool")
    before = len(collector.messages("tls"))
    args = ["-o", collector.target("tls"), "-f", "leef", "--spool", spool,
            "--stats-interval", "0"] + tls_args(collector, "tls")
    collector.stop()
    try:
        first = run_replay(CAPTURE, *args)
        assert first.returncode == 0, first.stderr.decode()
        assert b"sent=0 lost=0 spooled=198 in_spool=198" in first.stderr
    finally:
        collector.start()
    second = run_replay(CAPTURE, *args)
    assert second.returncode == 0, second.stderr.decode()
    assert b"sent=396 lost=0" in second.stderr and b"in_spool=0" in second.stderr
    messages = collector.wait_for("tls", before + 396)[before:]
    assert len(messages) == 396
    by_procid = {}
    for message in messages:
        by_procid.setdefault(message["procid"], []).append(message)
    assert sorted(len(group) for group in by_procid.values()) == [198, 198]
    for group in by_procid.values():
        check_delivery(collector, "tls", "leef", group, FIXTURE_EVENTS)


def test_spool_cap_drops_the_oldest_and_counts_them(collector, tmp_path):
    collector.stop()
    try:
        result = run_replay(CAPTURE, "-o", collector.target("tcp"), "-f", "tracee",
                            "--spool", str(tmp_path / "spool"), "--spool-max-mb", "1",
                            "--stats-interval", "0")
    finally:
        collector.start()
    # 198 tracee messages of ~1.2 kB fit in 1 MB: nothing lost...
    assert result.returncode == 0 and b"lost=0 spooled=198" in result.stderr
    from mlockaudit.transports.spool import Spool
    spool_dir = os.path.join(str(tmp_path / "spool"), os.listdir(str(tmp_path / "spool"))[0])
    small = Spool(spool_dir, 64 * 1024)                 # ...but reopened with a 64 kB cap
    small.append([b"x" * 1000] * 10)
    assert small.dropped > 0 and small.size <= 64 * 1024
    small.close()


def test_udp_messages_stay_within_2048_bytes(collector):
    long_exe = b"/opt/" + b"very-long-directory-name/" * 150 + b"python3"
    events = [make_event(exe=long_exe, proctitle=b"python3 " + b"a" * 120, tid=index)
              for index in range(5)]
    before = len(collector.messages("udp"))
    outputs = Outputs([collector.target("udp")], "tracee", OutputOptions(stats_interval=0))
    for event in events:
        outputs.emit(event)
    outputs.close()
    assert outputs.stats()["truncated"] == 5
    messages = collector.wait_for("udp", before + 5)[before:]
    assert len(messages) == 5
    for message in messages:
        assert len(message["raw"].encode("utf-8")) <= 2048
        sd = parse_sd(message["sd"])
        assert sd[1][1]["cut"] == "strings:256"
        doc = json.loads(message["msg"])                   # still one whole JSON document
        assert doc["executable"]["path"].endswith("...")
        assert len(doc["executable"]["path"]) == 256 + 3
    # the same events over TCP arrive whole
    before = len(collector.messages("tcp"))
    outputs = Outputs([collector.target("tcp")], "tracee", OutputOptions(stats_interval=0))
    for event in events:
        outputs.emit(event)
    outputs.close()
    messages = collector.wait_for("tcp", before + 5)[before:]
    assert all(json.loads(m["msg"])["executable"]["path"] == long_exe.decode() for m in messages)


def test_tls_verifies_the_collector(collector, tmp_path):
    if not collector.tls:
        pytest.skip("rsyslog-gnutls is not installed")
    before = len(collector.messages("tls"))
    wrong = run_replay(CAPTURE, "-o", collector.target("tls"), "--stats-interval", "0",
                       "--tls-ca", collector.certs["other-ca.pem"])
    assert wrong.returncode == 1
    assert b"lost=198" in wrong.stderr and b"certificate verify failed" in wrong.stderr
    assert len(collector.messages("tls")) == before
    insecure = run_replay(CAPTURE, "-o", collector.target("tls"), "--stats-interval", "0",
                          "--tls-insecure")
    assert insecure.returncode == 0 and b"sent=198 lost=0" in insecure.stderr
    collector.wait_for("tls", before + 198)
    assert len(collector.messages("tls")) == before + 198


def test_heartbeat_reaches_the_collector(collector):
    for format_name in FORMAT_NAMES:
        before = len(collector.messages("tcp"))
        outputs = Outputs([collector.target("tcp")], format_name, OutputOptions(stats_interval=0))
        for event in FIXTURE_EVENTS[:3]:
            outputs.emit(event)
        outputs.heartbeat({"events": 3, "lost": 0, "backend": "audit"})
        outputs.close()
        messages = collector.wait_for("tcp", before + 4)[before:]
        stats = [m for m in messages if m["msgid"] == "stats"]
        assert len(stats) == 1
        sd = dict(parse_sd(stats[0]["sd"]))
        assert sd["mlockaudit@32473"]["events"] == "3"
        assert sd["mlockaudit@32473"]["backend"] == "audit"
        assert "queued" in sd["mlockaudit@32473"] and "delivery_lost" in sd["mlockaudit@32473"]
        msg = stats[0]["msg"]
        if format_name in ("tracee", "ecs"):
            assert json.loads(msg)["mlockaudit"]["stats"]["events"] == 3
        elif format_name == "cef":
            assert parse_cef(msg)[1]["cn1"] == "3"
        else:
            assert parse_leef(msg)[1]["events"] == "3"


def wait_until(predicate, timeout=60):
    import time
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %ss" % timeout)
        time.sleep(0.05)


def test_rfc5424_parses_as_sent(collector):
    """What rsyslog parsed equals what our own reference parser reads from the raw
    message: the two agree on every header field."""
    messages = collector.messages("tcp")[:20]
    assert messages
    for message in messages:
        ours = parse_rfc5424(message["raw"].encode("utf-8"))
        assert ours["msgid"] == message["msgid"] and ours["procid"] == message["procid"]
        assert ours["app"] == message["app"] and ours["msg"] == message["msg"]


def test_periodic_heartbeat(collector):
    before = len(collector.messages("udp"))
    outputs = Outputs([collector.target("udp")], "cef", OutputOptions(stats_interval=0))
    outputs.start_heartbeat(lambda: {"events": 0, "lost": 0, "backend": "audit"}, interval=0.05)
    try:
        wait_until(lambda: len([m for m in collector.messages("udp")[before:]
                                if m["msgid"] == "stats"]) >= 2)
    finally:
        outputs.close()
    stats = [m for m in collector.messages("udp")[before:] if m["msgid"] == "stats"]
    assert len(stats) >= 2
    assert all(parse_cef(m["msg"])[0][4] == "stats" for m in stats)
