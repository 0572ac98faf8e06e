"""The single-file build (scripts/build-zipapp): dist/mlockaudit.pyz runs the same
commands from a clean directory with a bare interpreter (no venv, isolated mode)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import CAPTURES, ROOT
from live import kill_tracers, run_workload, tracefs_snapshot, mount_tracefs

# A bare interpreter: Debian's own python3 if present, else this one; -I ignores the
# environment, user site-packages and the current directory.
BARE = shutil.which("python3", path="/usr/bin") or sys.executable


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    result = subprocess.run([os.path.join(ROOT, "scripts", "build-zipapp")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stdout
    target = tmp_path_factory.mktemp("bare") / "mlockaudit.pyz"
    shutil.copy(os.path.join(ROOT, "dist", "mlockaudit.pyz"), str(target))
    return str(target)


def bare(pyz, *args, **kwargs):
    return subprocess.run([BARE, "-I", pyz] + list(args), cwd=os.path.dirname(pyz),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, **kwargs)


def test_offline_commands(pyz):
    assert bare(pyz, "--version").stdout.startswith(b"mlockaudit, version")
    assert b"-a always,exit -F arch=b64 -S mlock" in bare(pyz, "rules").stdout
    result = bare(pyz, "replay", os.path.join(CAPTURES, "kprobe.trace"))
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 198
    assert [json.loads(line)["mlockaudit"]["probe"] for line in result.stdout.splitlines()][0] \
        == "kprobe"


@pytest.mark.live
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_doctor_start_and_cleanup(pyz, tmp_path):
    report = json.loads(bare(pyz, "doctor", "--json").stdout)
    assert report["selected"] in ("audit", "tracefs")
    mount_tracefs()
    before = tracefs_snapshot()
    env = {"MLOCKAUDIT_RUN_DIR": str(tmp_path / "run")}
    out = tmp_path / "events.jsonl"
    err = open(str(tmp_path / "err"), "wb")
    proc = subprocess.Popen([BARE, "-I", pyz, "start", "--backend", "tracefs", "-o",
                             "file:%s" % out], cwd=str(tmp_path), stderr=err,
                            env=dict(os.environ, **env))
    try:
        deadline = time.monotonic() + 30
        while b"mlockaudit: ready: " not in (tmp_path / "err").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "err").read_bytes()
            time.sleep(0.05)
        truth = run_workload(b"from-pyz")
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        kill_tracers()
        err.close()
    events = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert len([e for e in events if e["hostProcessId"] == truth["pid"]]) == len(truth["calls"])
    assert tracefs_snapshot() == before
    assert bare(pyz, "cleanup", env=dict(os.environ, **env)).stdout.strip() == b"nothing to clean up"
