"""The issue's "done when", live (root; touches the kernel's audit state):
``mlockaudit start --backend audit -o syslog+tcp://127.0.0.1:PORT -f cef`` delivers each
call of real workloads (hostile comms included) to a real rsyslogd exactly once, parsed."""

import os
import time

import pytest

from live_helpers import Tracer, audit_snapshot, run_cli, run_workload, truth_calls
from rsyslogd import Rsyslogd, have_rsyslogd
from test_formats_siem import exact, parse_cef, parse_sd
from workload import HOSTILE_COMMS

pytestmark = [pytest.mark.live, pytest.mark.rsyslog]

if os.geteuid() != 0:
    pytest.skip("live tests need root", allow_module_level=True)
if not have_rsyslogd():
    pytest.skip("rsyslogd is not installed (scripts/test installs it)", allow_module_level=True)


def cef_call(message):
    """A received CEF message -> (pid, None, comm bytes, name, args, ret) as truth_calls."""
    header, ext = parse_cef(message["msg"])
    labelled = {ext[k + "Label"]: ext[k] for k in list(ext) if k + "Label" in ext}
    args = []
    for name in ("addr", "len", "flags"):
        if name in labelled:
            value = int(labelled[name], 16) if name == "addr" else int(labelled[name])
            args.append(value & 0xFFFFFFFF if name == "flags" else value)
    return (int(ext["spid"]), None, exact(ext["sproc"], labelled.get("sprocHex")), header[4],
            tuple(args), int(labelled["returnValue"]))


def deliver(tmp_path, format_name, transport, comms, thread_every=0):
    """``start --backend audit -o <rsyslogd's transport> -f FORMAT`` while workloads run
    -> (truths, messages received, tracer stderr). The audit state is checked after."""
    from test_syslog_rsyslog import tls_args
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    before = audit_snapshot()
    collector = Rsyslogd(tmp_path / "rsyslog", tls=transport.startswith("tls")).start()
    tracer = None
    try:
        tracer = Tracer(tmp_path, "--backend", "audit", "-o", collector.target(transport),
                        "-f", format_name, "--stats-interval", "0",
                        *tls_args(collector, transport), run_dir=run_dir).wait_ready()
        truths = [run_workload(comm, thread=bool(thread_every) and index % thread_every == 0)
                  for index, comm in enumerate(comms)]
        time.sleep(0.3)
        assert tracer.stop() == 0, tracer.stderr
        count = sum(len(truth["calls"]) for truth in truths)
        return truths, collector.wait_for(transport, count), tracer.stderr
    finally:
        if tracer is not None:
            tracer.kill()
        collector.stop()
        run_cli("cleanup", run_dir=run_dir)
        assert audit_snapshot() == before


def test_start_delivers_every_call_once_to_rsyslogd_as_cef(tmp_path):
    truths, messages, stderr = deliver(tmp_path, "cef", "tcp", HOSTILE_COMMS, thread_every=3)
    pids = {truth["pid"] for truth in truths}
    ours = []
    for message in messages:
        assert message["app"] == "mlockaudit"
        assert "#0" not in message["raw"] and "#1" not in message["raw"]
        sd = parse_sd(message["sd"])
        assert [element[0] for element in sd] == ["meta", "mlockaudit@32473"]
        call = cef_call(message)
        assert call[3] == message["msgid"]
        if call[0] in pids:
            ours.append(call)
    assert sorted(ours, key=repr) == truth_calls(truths, with_tid=False)   # once, true values
    assert "lost=0" in stderr


def _call_of(format_name, message, transport):
    """(pid, name, ret) from a received message of any format."""
    import json
    from test_formats_siem import parse_leef
    if transport == "local":                  # rsyslog keeps the space after "TAG:"
        assert message["msg"].startswith(" ")
        message = dict(message, msg=message["msg"][1:])
    if format_name == "tracee":
        data = json.loads(message["msg"])
        return data["hostProcessId"], data["eventName"], data["returnValue"]
    if format_name == "ecs":
        data = json.loads(message["msg"])
        return data["process"]["pid"], data["mlockaudit"]["syscall"], data["mlockaudit"]["returnValue"]
    if format_name == "leef":
        _, fields = parse_leef(message["msg"])
        return int(fields["pid"]), fields["syscall"], int(fields["ret"])
    call = cef_call(message)
    return call[0], call[3], call[5]


@pytest.mark.parametrize("format_name,transport", [
    ("tracee", "udp"), ("ecs", "tls"), ("leef", "local"), ("cef", "tls-client-cert")])
def test_start_delivers_each_format_over_each_transport(tmp_path, format_name, transport):
    """Every format and every transport from a live ``start`` (the full matrix runs through
    replay in test_syslog_rsyslog.py): each call once, parsed, with true pid/name/ret."""
    truths, messages, stderr = deliver(tmp_path, format_name, transport, HOSTILE_COMMS[:4])
    pids = {truth["pid"] for truth in truths}
    got = sorted(call for call in (_call_of(format_name, m, transport) for m in messages)
                 if call[0] in pids)
    assert got == sorted((truth["pid"], call["name"], call["ret"])
                         for truth in truths for call in truth["calls"])
    assert "lost=0" in stderr
