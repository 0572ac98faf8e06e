"""The audit backend where it must read auditd's text (kernels without multicast): as a
real auditd's plugin, and following a real auditd's log across rotation. Plus: the rules
file shipped for augenrules compiles, through auditctl, to the very bytes mlockaudit sends."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from live_helpers import (Tracer, event_calls, our_rules, run_cli, run_rule_count, run_workload,
                          truth_calls)
from conftest import AUDITD_CONF
from workload import HOSTILE_COMMS

pytestmark = [pytest.mark.live]

if os.geteuid() != 0:
    pytest.skip("live audit tests need root", allow_module_level=True)


def test_follows_the_log_of_a_real_auditd_across_rotation(tmp_path, run_dir, auditd):
    daemon, log = auditd
    tracer = Tracer(tmp_path, "--backend", "audit", "--input", log, run_dir=run_dir).wait_ready()
    assert "mode=input" in tracer.stderr
    truths = [run_workload(comm) for comm in HOSTILE_COMMS[:4]]
    time.sleep(0.5)
    daemon.send_signal(signal.SIGUSR1)              # auditd rotates: audit.log -> audit.log.1
    for _ in range(50):
        if os.path.exists(log + ".1"):
            break
        time.sleep(0.1)
    assert os.path.exists(log + ".1")
    truths += [run_workload(comm) for comm in HOSTILE_COMMS[4:8]]
    time.sleep(1.0)
    assert tracer.stop() == 0, tracer.stderr
    pids = {truth["pid"] for truth in truths}
    assert event_calls(tracer.events(), pids, with_tid=False) == truth_calls(truths, with_tid=False)
    assert not our_rules()


def test_runs_as_a_real_auditd_plugin(tmp_path, audit_guard):
    """auditd starts mlockaudit from a plugins.d file (rules/au-mlockaudit.conf, with the
    path and config adapted), feeds it records on stdin, and stops it with itself."""
    work = tmp_path / "auditd"
    plugins = work / "plugins"
    plugins.mkdir(parents=True)
    events_path = tmp_path / "plugin-events.jsonl"
    settings = tmp_path / "plugin.toml"
    with open(os.path.join(ROOT, "rules", "auditd-plugin.toml")) as handle:
        text = handle.read().replace('output = ["syslog:"]', 'output = ["file:%s"]' % events_path)
    settings.write_text(text)
    runner = tmp_path / "mlockaudit-plugin"          # auditd passes at most 2 arguments
    runner.write_text("#!/bin/sh\ncd %s\nMLOCKAUDIT_RUN_DIR=%s exec %s -m mlockaudit \"$@\" "
                      "2>>%s\n" % (ROOT, tmp_path / "run", sys.executable, tmp_path / "plugin.err"))
    runner.chmod(0o750)
    with open(os.path.join(ROOT, "rules", "au-mlockaudit.conf")) as handle:
        conf = handle.read().replace("/usr/local/bin/mlockaudit", str(runner)).replace(
            "/etc/mlockaudit/auditd-plugin.toml", str(settings))
    (plugins / "au-mlockaudit.conf").write_text(conf)
    (work / "auditd.conf").write_text(AUDITD_CONF.format(log=work / "audit.log", plugins=plugins))
    (work / "auditd.conf").chmod(0o640)
    daemon = subprocess.Popen(["auditd", "-n", "-s", "nochange", "-c", str(work)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(our_rules()) < run_rule_count():
            time.sleep(0.1)                          # the plugin is up: its rules are in
        assert len(our_rules()) == run_rule_count(), (tmp_path / "plugin.err").read_text()
        truths = [run_workload(comm) for comm in HOSTILE_COMMS[:5]]
        time.sleep(1.0)
    finally:
        daemon.send_signal(signal.SIGTERM)           # auditd stops its plugins
        daemon.wait(20)
    deadline = time.monotonic() + 20                 # the plugin finishes its stop
    while time.monotonic() < deadline and subprocess.run(
            ["pgrep", "-f", "mlockaudit start"], stdout=subprocess.DEVNULL).returncode == 0:
        time.sleep(0.1)
    err = (tmp_path / "plugin.err").read_text()
    assert "mlockaudit: ready: " in err and "mode=input" in err and "stopped: events=" in err, err
    assert " lost=0 " in err, err
    import json
    # (the shipped plugin config keeps the default detections on: the workload's
    # mlockall(MCL_CURRENT|MCL_FUTURE) fires mlockall-future; the calls are compared here)
    events = [json.loads(line) for line in events_path.read_bytes().splitlines()]
    pids = {truth["pid"] for truth in truths}
    assert {e["mlockaudit"]["detection"]["id"] for e in events
            if e["eventName"] == "detection" and e["hostProcessId"] in pids} == {"mlockall-future"}
    events = [e for e in events if e["eventName"] != "detection"]
    assert event_calls(events, pids, with_tid=False) == truth_calls(truths, with_tid=False)
    assert not our_rules()


def test_shipped_rules_file_compiles_to_our_bytes(audit_guard):
    """auditctl (the reference rule compiler) loads rules/50-mlockaudit.rules; the kernel
    then holds exactly the bytes mlockaudit would send for the same rules."""
    from mlockaudit.audit import rules as audit_rules
    from mlockaudit.audit.netlink import AuditControl
    path = os.path.join(ROOT, "rules", "50-mlockaudit.rules")
    subprocess.run(["auditctl", "-R", path], check=True, stdout=subprocess.DEVNULL)
    try:
        with AuditControl() as control:
            loaded = [data for data in control.list_rules()
                      if audit_rules.parse_rule_bytes(data)["key"] == audit_rules.KEY]
        ours, notes = audit_rules.family_rules("x86_64", kallsyms={
            prefix + name for prefix in ("sys_", "compat_sys_") for name in audit_rules.syscalls.FAMILY})
        assert sorted(loaded) == sorted(rule.to_bytes() for rule in ours)
        # and start leaves such pre-loaded rules alone (EEXIST: not ours)
        run_dir = "/tmp/mlockaudit-rules-test"
        result = run_cli("cleanup", run_dir=run_dir)
        assert result.returncode == 0
        with AuditControl() as control:
            assert sorted(d for d in control.list_rules()
                          if audit_rules.parse_rule_bytes(d)["key"] == audit_rules.KEY) == sorted(loaded)
    finally:
        subprocess.run(["auditctl", "-D", "-k", "mlockaudit"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
