"""The single-file build (scripts/build-zipapp): dist/mlockaudit.pyz runs the same
commands from a clean directory with a bare interpreter (isolated mode, no venv), on the
Python every supported host ships: 3.6 (RHEL 7/8, Ubuntu 18.04, SLES 15) through 3.13.

The interpreters are the real CPython builds pyenv holds on this machine (and Debian's own
/usr/bin/python3); one that is absent is skipped with a message saying so."""

import glob
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import CAPTURES, ROOT, legacy_python
from live_helpers import kill_tracers, mount_tracefs, tracefs_snapshot

SUPPORTED = ("3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13")
FIXTURES = sorted(path for path in glob.glob(os.path.join(CAPTURES, "*.log"))
                  + glob.glob(os.path.join(CAPTURES, "*.trace"))
                  if not os.path.basename(path).startswith("surface-"))  # (recorded ones: 198)
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin")


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    result = subprocess.run([os.path.join(ROOT, "scripts", "build-zipapp")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stdout
    target = tmp_path_factory.mktemp("bare") / "mlockaudit.pyz"
    shutil.copy(os.path.join(ROOT, "dist", "mlockaudit.pyz"), str(target))
    return str(target)


def interpreter(version):
    """The pyenv CPython for ``version`` ("3.6"), or skip saying it is absent."""
    path = legacy_python(version)
    if path is None:
        pytest.skip("no CPython %s on this machine (pyenv versions): not tested" % version)
    return path


def bare(python, pyz, *args, **kwargs):
    kwargs.setdefault("timeout", 120)
    return subprocess.run([python, "-I", pyz] + list(args), cwd=os.path.dirname(pyz),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.fixture(scope="module")
def newest_replays(pyz):
    """Replay output of every fixture with the newest Python available: the reference."""
    python = next((path for path in map(legacy_python, reversed(SUPPORTED)) if path), None)
    python = python or SYSTEM_PYTHON
    return {(fixture, fmt): bare(python, pyz, "replay", fixture, "-f", fmt).stdout
            for fixture in FIXTURES for fmt in ("tracee", "ecs", "cef", "leef")}


@pytest.mark.parametrize("version", SUPPORTED)
def test_offline_commands_on_every_python(version, pyz, newest_replays):
    python = interpreter(version)
    result = bare(python, pyz, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"mlockaudit, version")
    assert b"-a always,exit -F arch=b64 -S mlock" in bare(python, pyz, "rules").stdout
    report = bare(python, pyz, "doctor", "--json")
    assert b"Traceback" not in report.stderr, report.stderr
    assert json.loads(report.stdout.decode())["kernel"]["release"] == os.uname().release
    # every capture: byte for byte what the newest Python writes (every format on 3.6,
    # the oldest, where a difference would show first; tracee JSON on the others)
    for (fixture, fmt), expected in sorted(newest_replays.items()):
        if fmt != "tracee" and version != SUPPORTED[0]:
            continue
        result = bare(python, pyz, "replay", fixture, "-f", fmt)
        assert result.returncode == 0, (fixture, result.stderr)
        assert len(result.stdout.splitlines()) == 198
        assert result.stdout == expected, (fixture, fmt)


def test_system_python_runs_it(pyz):
    if SYSTEM_PYTHON is None:
        pytest.skip("no /usr/bin/python3")
    result = bare(SYSTEM_PYTHON, pyz, "replay", os.path.join(CAPTURES, "kprobe.trace"))
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 198
    assert [json.loads(line)["mlockaudit"]["probe"] for line in result.stdout.splitlines()][0] \
        == "kprobe"


@pytest.mark.live
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.parametrize("backend", ["tracefs", "audit"])
def test_start_on_python_3_6_reports_a_workload(backend, pyz, tmp_path, run_dir, tracefs_guard,
                                                audit_guard):
    """RHEL 7/8's python3 is 3.6: the file traces there, on each backend, and leaves the
    kernel as it found it."""
    from live_helpers import audit_snapshot, run_workload
    python = interpreter("3.6")
    mount_tracefs()
    before = (tracefs_snapshot(), audit_snapshot())
    env = dict(os.environ, MLOCKAUDIT_RUN_DIR=run_dir)
    out = tmp_path / "events.jsonl"
    err_path = tmp_path / "err"
    err = open(str(err_path), "wb")
    proc = subprocess.Popen([python, "-I", pyz, "start", "--no-detections", "--backend", backend, "-o",
                             "file:%s" % out], cwd=str(tmp_path), stderr=err, env=env)
    try:
        deadline = time.monotonic() + 60
        while b"mlockaudit: ready: " not in err_path.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, err_path.read_bytes()
            time.sleep(0.05)
        truth = run_workload(b"py36-" + backend.encode(), python=python)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, err_path.read_bytes()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_tracers()
        err.close()
    events = [json.loads(line) for line in out.read_bytes().splitlines()]
    mine = [e for e in events if e["hostProcessId"] == truth["pid"]]
    assert sorted((e["eventName"], e["returnValue"]) for e in mine) == sorted(
        (call["name"], call["ret"]) for call in truth["calls"])
    assert {e["processName"] for e in mine} == {"py36-" + backend}
    assert (tracefs_snapshot(), audit_snapshot()) == before
    result = bare(python, pyz, "cleanup", env=env)
    assert result.stdout.strip() == b"nothing to clean up", result.stderr
