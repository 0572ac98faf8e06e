"""Daemon life on the real kernel: doctor tells the truth, start with no flags picks a
backend and says why, systemd's READY=1, SIGHUP reopens files and rereads the config."""

import json
import os
import signal
import socket
import time

import pytest

from live_helpers import Tracer, run_cli, run_workload

pytestmark = [pytest.mark.live]

if os.geteuid() != 0:
    pytest.skip("live tests need root", allow_module_level=True)


def test_doctor_tells_the_truth_about_this_kernel():
    report = json.loads(run_cli("doctor", "--json").stdout)
    tracefs, audit = report["backends"]["tracefs"], report["backends"]["audit"]
    assert audit["available"] is True and audit["mode"] in ("unicast", "multicast")
    assert tracefs["available"] and tracefs["tracepoints"] is True
    assert tracefs["kprobes"] is os.path.exists("/sys/kernel/tracing/kprobe_events")
    assert tracefs["kprobes"] is False                   # this kernel: CONFIG_KPROBES off
    with open("/proc/config.gz", "rb") as handle:        # the kernel's own word on lockdown
        import gzip
        config = gzip.decompress(handle.read())
    if b"CONFIG_LOCK_DOWN_KERNEL_FORCE_INTEGRITY=y" in config:
        assert report["lockdown"] == "integrity"
    assert report["kernel"]["release"] == os.uname().release
    assert report["selected"] in ("audit", "tracefs") and report["why"]
    assert set(report["calls"]) == {"mlock", "mlock2", "munlock", "mlockall", "munlockall"}


def test_start_without_flags_picks_a_backend_and_says_why(tmp_path, run_dir, tracefs_guard):
    report = json.loads(run_cli("doctor", "--json").stdout)
    tracer = Tracer(tmp_path, run_dir=run_dir).wait_ready()
    assert "backend %s: %s" % (report["selected"], report["why"]) in tracer.stderr
    truth = run_workload(b"auto")
    time.sleep(0.5)
    assert tracer.stop() == 0
    pids = {e["hostProcessId"] for e in tracer.events()}
    assert truth["pid"] in pids


def test_systemd_readiness_and_stopping(tmp_path, run_dir, tracefs_guard):
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(30)
    try:
        tracer = Tracer(tmp_path, "--backend", "tracefs", run_dir=run_dir,
                        env={"NOTIFY_SOCKET": path})
        message = listener.recv(4096)
        assert message.startswith(b"READY=1") and "mlockaudit: ready: " in tracer.stderr
        tracer.stop()
        assert listener.recv(4096) == b"STOPPING=1"
    finally:
        listener.close()


def test_sighup_reopens_files_and_rereads_the_config(tmp_path, run_dir, tracefs_guard):
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    config = tmp_path / "mlockaudit.toml"
    config.write_text('backend = "tracefs"\noutput = "file:%s"\n' % first)
    tracer = Tracer(tmp_path, "--config", str(config), run_dir=run_dir, output=False).wait_ready()
    # logrotate: the file is renamed away, SIGHUP makes mlockaudit open a new one
    run_workload(b"before-rotate")
    time.sleep(0.6)
    os.rename(str(first), str(first) + ".1")
    tracer.proc.send_signal(signal.SIGHUP)
    time.sleep(0.6)
    run_workload(b"after-rotate")
    time.sleep(0.6)
    rotated = (tmp_path / "first.jsonl.1").read_bytes()
    assert b"before-rotate" in rotated and b"after-rotate" not in rotated
    assert b"after-rotate" in first.read_bytes()
    # a new output in the config file, and a backend change that needs a restart
    config.write_text('backend = "audit"\noutput = "file:%s"\nfailures_only = true\n' % second)
    tracer.proc.send_signal(signal.SIGHUP)
    time.sleep(0.6)
    truth = run_workload(b"after-reload")
    time.sleep(0.6)
    # a broken config on SIGHUP keeps the running one
    config.write_text("backend = \n")
    tracer.proc.send_signal(signal.SIGHUP)
    time.sleep(0.6)
    assert tracer.stop() == 0
    assert "backend changed; that takes a restart" in tracer.stderr
    assert "reload failed, the running configuration stays" in tracer.stderr
    events = [json.loads(line) for line in second.read_bytes().splitlines()]
    failures = [c for c in truth["calls"] if c["ret"] < 0]
    assert len(events) == len(failures) and all(e["returnValue"] < 0 for e in events)
