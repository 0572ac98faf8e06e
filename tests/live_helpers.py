"""Helpers for the live tests: run the real ``mlockaudit start`` against this machine's
kernel, run workloads, read back what it emitted, snapshot the kernel's state."""

import json
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, SCRIPTS, expected_calls

truth_calls = expected_calls         # the workload's ground truth, as event_calls gives it

WORKLOAD = os.path.join(SCRIPTS, "workload.py")


class Tracer(object):
    """``mlockaudit start ...`` as a child process, stderr to a file we can poll
    (``--no-detections`` unless ``detections``)."""

    def __init__(self, tmp_path, *args, run_dir=None, env=None, stdin=None, output=True,
                 detections=False):
        self.out_path = str(tmp_path / ("events-%d.jsonl" % (time.monotonic() * 1e9)))
        self.err_path = self.out_path + ".stderr"
        self._err = open(self.err_path, "wb")
        environment = dict(os.environ, PYTHONUNBUFFERED="1")
        if run_dir is not None:
            environment["MLOCKAUDIT_RUN_DIR"] = run_dir
        environment.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlockaudit", "start"]
            + (["-o", "file:" + self.out_path] if output else [])
            # the shipped detections fire on some workloads (mlockall(MCL_FUTURE)): tests of
            # the calls themselves turn them off, tests of the detections keep them
            + ([] if detections else ["--no-detections"]) + list(args),
            stdout=subprocess.DEVNULL, stderr=self._err, stdin=stdin,
            cwd=ROOT, env=environment)

    @property
    def stderr(self):
        with open(self.err_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "mlockaudit: ready: " in self.stderr:      # ("already" holds "ready")
                return self
            if self.proc.poll() is not None:
                raise AssertionError("mlockaudit exited (%s) before ready:\n%s"
                                     % (self.proc.returncode, self.stderr))
            time.sleep(0.05)
        self.kill()
        raise AssertionError("no ready line within %ss:\n%s" % (timeout, self.stderr))

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("mlockaudit did not stop within %ss:\n%s" % (timeout, self.stderr))
        self._err.close()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._err.close()

    def events(self):
        if not os.path.exists(self.out_path):
            return []
        with open(self.out_path, "rb") as handle:
            return [json.loads(line) for line in handle.read().splitlines()]


def run_workload(comm=b"", thread=False, storm=0, python=sys.executable, surface=False):
    cmd = [python, WORKLOAD] + (["--surface"] if surface else [])
    if comm:
        cmd += ["--comm-hex", comm.hex()]
    if thread:
        cmd.append("--thread")
    if storm:
        cmd += ["--storm", str(storm)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout
    return json.loads(out)


def event_calls(events, pids, with_tid=True):
    """JSON events of the given pids -> the tuples of conftest.expected_calls."""
    calls = []
    for event in events:
        if event["hostProcessId"] not in pids:
            continue
        raw_hex = event["mlockaudit"].get("processNameHex")
        name = event["processName"]
        comm = bytes.fromhex(raw_hex) if raw_hex else (name.encode() if name is not None else None)
        args = []
        for arg in event["args"]:
            value = arg["value"]
            args.append(int(value, 16) if isinstance(value, str) else
                        value & 0xFFFFFFFF if arg["type"] in ("int", "int32") else value)
        calls.append((event["hostProcessId"], event["hostThreadId"] if with_tid else None, comm,
                      event["eventName"], tuple(args), event["returnValue"]))
    return sorted(calls, key=repr)


def audit_snapshot():
    """The audit state a tracer must leave as it found it."""
    from mlockaudit.audit.netlink import AuditControl
    with AuditControl() as control:
        status = control.status()
        rules = sorted(control.list_rules())
    return {"enabled": status["enabled"], "pid": status["pid"], "failure": status["failure"],
            "rate_limit": status["rate_limit"], "backlog_limit": status["backlog_limit"],
            "rules": rules}


def our_rules():
    from mlockaudit.audit.netlink import AuditControl
    from mlockaudit.audit.rules import KEY, parse_rule_bytes
    with AuditControl() as control:
        return [rule for rule in map(parse_rule_bytes, control.list_rules()) if rule["key"] == KEY]


def run_rule_count():
    """How many rules one run of ``start --backend audit`` installs on this host: the
    family's and the surface's always-rules (audit.rules.family_rules) and the never-rule."""
    from mlockaudit import host
    from mlockaudit.audit.rules import family_rules
    return len(family_rules(host.native_arch())[0]) + 1


def run_cli(*args, run_dir=None, timeout=60):
    env = dict(os.environ)
    if run_dir is not None:
        env["MLOCKAUDIT_RUN_DIR"] = run_dir
    return subprocess.run([sys.executable, "-m", "mlockaudit"] + list(args), cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


# ``python -m mlockaudit start``, the console script, and the single file (mlockaudit.pyz)
TRACER_PATTERN = r"mlockaudit(\.pyz)? start"


def kill_tracers(timeout=10):
    """SIGKILL every ``mlockaudit start`` (or ``mlockaudit.pyz start``) still running and wait until they are gone
    (a cleanup that runs while one still dies would find its lock held)."""
    subprocess.run(["pkill", "-KILL", "-f", TRACER_PATTERN], check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["pgrep", "-f", TRACER_PATTERN], stdout=subprocess.DEVNULL).returncode:
            return
        time.sleep(0.05)
    raise AssertionError("mlockaudit processes survived SIGKILL")


TRACEFS = "/sys/kernel/tracing"


def tracefs_snapshot(root=TRACEFS):
    """The tracefs state a tracer must leave as it found it (global files only)."""
    def read(name):
        try:
            with open(os.path.join(root, name), "rb") as handle:
                return handle.read()
        except OSError as exc:
            return "error %s" % exc.errno
    snapshot = {name: read(name) for name in (
        "kprobe_events", "uprobe_events", "dynamic_events", "set_event", "current_tracer",
        "tracing_on", "trace_clock", "buffer_size_kb", "saved_cmdlines_size",
        "options/record-tgid", "events/enable")}
    snapshot["instances"] = sorted(os.listdir(os.path.join(root, "instances")))
    with open("/proc/mounts") as handle:
        snapshot["mounts"] = sorted(line.split()[1] for line in handle if " tracefs " in line)
    return snapshot


def mount_tracefs():
    if not os.path.isdir(os.path.join(TRACEFS, "events")):
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=True)


def comparable_calls(events, truths, with_tid=True):
    """(got, want) call lists of events and the workload's truth. A comm the trace cannot
    show is reported as null, never as a wrong name: a null comm is accepted only where the
    truth is the literal "<...>" (ftrace's own word for unknown) and the process was gone
    before /proc could be read."""
    unknowable = {truth["pid"] for truth in truths if truth["comm_hex"] == b"<...>".hex()}
    got = [call[:2] + (b"<...>",) + call[3:] if call[2] is None and call[0] in unknowable
           else call
           for call in event_calls(events, {truth["pid"] for truth in truths}, with_tid)]
    return sorted(got, key=repr), truth_calls(truths, with_tid)


def build_loadgen(directory):
    """scripts/loadgen.c built with the system compiler into ``directory``."""
    target = os.path.join(str(directory), "loadgen")
    subprocess.run(["cc", "-O2", "-pthread", "-o", target, os.path.join(SCRIPTS, "loadgen.c")],
                   check=True)
    return target


def run_burst(loadgen, processes, threads_every=3):
    """``loadgen burst``: short-lived processes (and threads) with hostile comms, one
    mlock2 each -> the truth, one dict per call (pid, tid, ppid, comm_hex, ret), and the
    pid of the loadgen parent."""
    proc = subprocess.Popen([loadgen, "burst", str(processes), str(threads_every)],
                            stdout=subprocess.PIPE)
    out = proc.communicate()[0]
    assert proc.returncode == 0
    return [json.loads(line) for line in out.splitlines()], proc.pid
