"""start's file: outputs on the real kernel (issue #17): a planted symlink is refused before
anything is created in the kernel, a new file is 0600 whatever the umask, and a SIGHUP onto
a path replaced by a link is refused, counted as delivery loss, and the run goes on."""

import os
import re
import signal
import stat
import time

import pytest

from live_helpers import TRACEFS, Tracer, run_workload

pytestmark = [pytest.mark.live]

if os.geteuid() != 0:
    pytest.skip("live tests need root", allow_module_level=True)


def victim(tmp_path):
    path = tmp_path / "victim"
    path.write_bytes(b"do not touch\n")
    os.utime(str(path), (1000000000, 1000000000))
    return path


def untouched(path):
    return path.read_bytes() == b"do not touch\n" and os.stat(str(path)).st_mtime == 1000000000


def our_instances():
    return [name for name in os.listdir(os.path.join(TRACEFS, "instances"))
            if name.startswith("mlockaudit_")]


def test_start_refuses_a_planted_symlink_and_leaves_the_kernel_alone(tmp_path, run_dir,
                                                                      tracefs_guard):
    target = victim(tmp_path)
    link = tmp_path / "events.jsonl"
    os.symlink(str(target), str(link))
    tracer = Tracer(tmp_path, "--backend", "tracefs", "-o", "file:%s" % link,
                    run_dir=run_dir, output=False)
    tracer.proc.wait(30)
    assert tracer.stop() == 2
    assert "refusing file:%s: it is a symbolic link" % link in tracer.stderr
    assert "mlockaudit: ready: " not in tracer.stderr and "Traceback" not in tracer.stderr
    assert untouched(target) and os.path.islink(str(link))
    assert our_instances() == []                       # (tracefs_guard: nothing else either)
    assert not os.path.exists(os.path.join(run_dir, "state.json"))


def test_start_creates_its_file_0600_under_umask_0(tmp_path, run_dir, tracefs_guard):
    old = os.umask(0)
    try:
        tracer = Tracer(tmp_path, "--backend", "tracefs", run_dir=run_dir)
    finally:
        os.umask(old)
    tracer.wait_ready()
    truth = run_workload(b"private")
    time.sleep(0.6)
    assert tracer.stop() == 0
    assert stat.S_IMODE(os.stat(tracer.out_path).st_mode) == 0o600
    assert truth["pid"] in {event["hostProcessId"] for event in tracer.events()}
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700


def test_start_sighup_onto_a_planted_link_is_counted_and_the_run_goes_on(tmp_path, run_dir,
                                                                          tracefs_guard):
    path = tmp_path / "events.jsonl"
    target = victim(tmp_path)
    tracer = Tracer(tmp_path, "--backend", "tracefs", "-o", "file:%s" % path,
                    run_dir=run_dir, output=False).wait_ready()
    run_workload(b"before-rotate")
    time.sleep(0.6)
    os.rename(str(path), str(path) + ".1")
    os.symlink(str(target), str(path))
    tracer.proc.send_signal(signal.SIGHUP)
    time.sleep(0.6)
    refused = run_workload(b"while-refused")
    time.sleep(0.6)
    assert "reopen: refusing file:%s: it is a symbolic link" % path in tracer.stderr
    assert tracer.proc.poll() is None                  # still running
    os.unlink(str(path))
    tracer.proc.send_signal(signal.SIGHUP)
    time.sleep(0.6)
    run_workload(b"after-fix")
    time.sleep(0.6)
    assert tracer.stop() == 0
    assert untouched(target)
    assert b"before-rotate" in (tmp_path / "events.jsonl.1").read_bytes()
    data = path.read_bytes()
    assert b"after-fix" in data and b"while-refused" not in data
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    lost = int(re.search(r"delivery_lost=(\d+)", tracer.stderr).group(1))
    assert lost >= len(refused["calls"])
