"""Shared helpers: paths, the workload's ground truth, and comparing events to it."""

import glob
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
CAPTURES = os.path.join(FIXTURES, "captures")
SCRIPTS = os.path.join(ROOT, "scripts")
# Real audit logs written elsewhere (laurel's test data): ../shared/corpus beside the
# checkout, or where MLOCKAUDIT_CORPUS points; never copied into the project.
CORPUS = next((path for path in (
    os.environ.get("MLOCKAUDIT_CORPUS"),
    os.path.normpath(os.path.join(ROOT, "..", "shared", "corpus", "laurel-testdata")),
    "/work/shared/corpus/laurel-testdata") if path and os.path.isdir(path)),
    os.path.normpath(os.path.join(ROOT, "..", "shared", "corpus", "laurel-testdata")))

sys.path.insert(0, SCRIPTS)
# the SIEM parsers of tests/formats/test_formats_siem.py and the TLS setup of
# tests/transports/test_syslog_rsyslog.py are shared with the live tests: importable
# however few of the test directories a run collects
sys.path.insert(0, os.path.join(ROOT, "tests", "formats"))
sys.path.insert(0, os.path.join(ROOT, "tests", "transports"))
sys.path.insert(0, os.path.join(ROOT, "tests", "live"))


def legacy_python(version):
    """The CPython ``version`` ("3.6") to test the legacy hosts' interpreters with: the
    newest pyenv build of that line (``$PYENV_ROOT`` or ~/.pyenv), or the path in
    ``MLOCKAUDIT_PYTHON_3_6``; None when this machine has none."""
    override = os.environ.get("MLOCKAUDIT_PYTHON_" + version.replace(".", "_"))
    if override:
        return override if os.path.exists(override) else None
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = []
    for path in glob.glob(os.path.join(root, "versions", version + ".*", "bin", "python3")):
        parts = os.path.basename(os.path.dirname(os.path.dirname(path))).split(".")
        if len(parts) == 3 and all(part.isdigit() for part in parts):
            found.append((tuple(int(part) for part in parts), path))
    return max(found)[1] if found else None


def load_truth(path):
    with open(path) as handle:
        data = json.load(handle)
    return data if isinstance(data, list) else [data]


def expected_calls(truths, with_tid=True):
    """Ground truth -> sorted list of (pid, tid, comm bytes, name, args, ret)."""
    calls = []
    for truth in truths:
        comm = bytes.fromhex(truth["comm_hex"])
        for call in truth["calls"]:
            calls.append((truth["pid"], call["tid"] if with_tid else None, comm, call["name"],
                          tuple(call["args"]), call["ret"]))
    return sorted(calls, key=repr)


def observed_calls(events, with_tid=True):
    calls = []
    for event in events:
        comm = event.comm.encode("utf-8", "surrogateescape") if event.comm is not None else None
        calls.append((event.pid, event.tid if with_tid else None, comm, event.name,
                      tuple(event.args), event.ret))
    return sorted(calls, key=repr)


@pytest.fixture
def collect():
    """A list and an emit() that appends to it."""
    events = []
    return events, events.append


@pytest.fixture
def run_dir(tmp_path):
    """A private MLOCKAUDIT_RUN_DIR (lock and state file) for one test's tracers."""
    path = str(tmp_path / "run")
    os.makedirs(path)
    return path


@pytest.fixture
def tracefs_guard(run_dir):
    """Snapshot tracefs; after the test, whatever happened, nothing of ours is left (and
    the test fails if the tracer itself had left something)."""
    from live_helpers import TRACEFS, kill_tracers, mount_tracefs, run_cli, tracefs_snapshot
    mount_tracefs()
    assert not [name for name in os.listdir(os.path.join(TRACEFS, "instances"))
                if name.startswith("mlockaudit_")], "mlockaudit instances left before the test"
    before = tracefs_snapshot()
    yield before
    kill_tracers()
    run_cli("cleanup", run_dir=run_dir)
    mount_tracefs()
    assert tracefs_snapshot() == before


@pytest.fixture
def audit_guard(run_dir):
    """The same for the kernel's audit state (rules and settings)."""
    from live_helpers import audit_snapshot, kill_tracers, our_rules, run_cli
    assert not our_rules(), "the kernel holds mlockaudit rules before the test started"
    before = audit_snapshot()
    yield before
    kill_tracers()
    run_cli("cleanup", run_dir=run_dir)
    assert audit_snapshot() == before


AUDITD_CONF = """\
local_events = yes
write_logs = yes
log_file = {log}
log_format = RAW
flush = INCREMENTAL_ASYNC
freq = 50
num_logs = 3
max_log_file_action = ignore
space_left = 2
space_left_action = ignore
admin_space_left = 1
admin_space_left_action = ignore
disk_full_action = ignore
disk_error_action = ignore
plugin_dir = {plugins}
"""


@pytest.fixture
def auditd(audit_guard):
    """The real auditd (Debian's), registered as the audit daemon, logging to a temp dir."""
    import shutil
    import signal
    import subprocess
    import tempfile
    import time
    from live_helpers import audit_snapshot
    if shutil.which("auditd") is None:
        pytest.fail("auditd is not installed (scripts/test installs it)")
    work = tempfile.mkdtemp(prefix="mlockaudit-auditd-")
    os.mkdir(os.path.join(work, "plugins"))
    log = os.path.join(work, "audit.log")
    with open(os.path.join(work, "auditd.conf"), "w") as handle:
        handle.write(AUDITD_CONF.format(log=log, plugins=os.path.join(work, "plugins")))
    os.chmod(os.path.join(work, "auditd.conf"), 0o640)
    daemon = subprocess.Popen(["auditd", "-n", "-s", "nochange", "-c", work],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if audit_snapshot()["pid"] == daemon.pid:
                break
            time.sleep(0.05)
        else:
            pytest.fail("auditd did not register")
        yield daemon, log
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)
        shutil.rmtree(work)
