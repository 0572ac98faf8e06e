"""The kprobe strategy and the lockdown fallback, proven on real kprobe kernels: Debian's
5.10 (11, bullseye), 6.1 (12, bookworm) and 6.12 (13, trixie), booted under qemu
(scripts/vmlib.py), since this machine's kernel has no kprobes and its tracing state is not
ours to touch. Every case runs on every kernel of the matrix (test ids ``[5.10]``,
``[6.1]``, ``[6.12]``); MLOCKAUDIT_VM_KERNELS="6.1" (or "5.10,6.12") narrows it. One boot
per case and kernel:

1. ``--backend tracefs --probe kprobe``: every call of the workload (whole family,
   failures, hostile comms, and 32-bit callers through ``int $0x80``) arrives once with
   true values and the caller's arch; probes and instance are gone after stop, a foreign
   probe group and instance survive; kill -9 leaves an instance and a probe group that
   ``cleanup`` removes, exactly those.
2. ``lockdown=confidentiality audit=1``: tracefs is empty and kprobes are refused (``start
   --backend tracefs`` says why); doctor says so and picks audit; ``start`` with no backend
   flag catches the workload, 32-bit callers included; the audit rules and settings are as
   before afterwards.
3. ``lockdown=integrity`` (audit off, as the kernel boots without ``audit=``): kprobes
   still work; doctor reports integrity and picks tracefs, preferred when audit is
   disabled; ``start`` with no flags traces with the syscall tracepoints.

The guest runs this file (``python tests/test_vm_kernel.py --guest CASE``) with the
project's venv: it does every step of its case and writes what it saw, one JSON object per
line ``{"key": ..., "value": ...}``, to ``$MLOCKAUDIT_VM_EXCHANGE/facts.jsonl``; the tests
here assert on those facts. A guest that does not boot or does not finish is a failure
with the last console lines, never a skip.
"""

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
if TESTS not in sys.path:                    # run as a script in the guest
    sys.path.insert(0, TESTS)

import pytest  # noqa: E402

from conftest import ROOT, SCRIPTS  # noqa: E402   (puts scripts/ on sys.path)
from mlockaudit.syscalls import SYSCALL_NUMBERS  # noqa: E402
import vmlib  # noqa: E402

#: the kernel lines each case runs on (MLOCKAUDIT_VM_KERNELS narrows them)
KERNELS = vmlib.kernel_matrix()

FACTS = "facts.jsonl"
GUEST_RUN_DIR = "/run/mlockaudit-test"       # guest tmpfs (the host's / is read-only there)
TRACEFS = "/sys/kernel/tracing"
FOREIGN_PROBE = "p:othertool/x __x64_sys_getpid"
FOREIGN_INSTANCE = "othertool"
#: comms of the 32-bit (int $0x80) workload: the ia32 entries are probed (kprobes) or
#: ruled (audit's b32 rule) too
COMPAT_COMMS = (b"compat32", b"evil\nil-1 [000]")
#: short-lived processes per burst (scripts/loadgen.c; every 3rd with a renamed thread)
BURST = 60
#: seconds for one whole guest run: a hang guard (one run took 320 s on a busy 2-core host)
BOOT_TIMEOUT = 600

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="the qemu harness needs root"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="the guest kernel is amd64"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None and shutil.which("apt-get") is None,
                       reason="no qemu and no apt-get to install it"),
]


def venv_python():
    path = os.path.join(ROOT, ".venv", "bin", "python")
    return path if os.path.exists(path) else sys.executable


# =========================================================================== in the guest

class Facts(object):
    """Append-only JSON lines in the exchange share, flushed one by one, so a guest that
    dies half-way still tells how far it got."""

    def __init__(self, path):
        self.handle = open(path, "a")
        self.started = time.monotonic()

    def __call__(self, key, value):
        self.handle.write(json.dumps({"key": key, "value": value}, sort_keys=True) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def step(self, message):
        sys.stdout.write("[%6.1fs] %s\n" % (time.monotonic() - self.started, message))
        sys.stdout.flush()


def _text(data):
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data


def _read(path):
    try:
        with open(path, "rb") as handle:
            return _text(handle.read())
    except OSError as exc:
        return "error %s" % errno_name(exc.errno)


def errno_name(number):
    import errno
    return errno.errorcode.get(number, str(number))


def _append(path, line):
    """O_APPEND, one write: kprobe_events opened otherwise would drop every probe."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def _snapshot():
    """tests/live.py's snapshot of the global tracefs state, as text. On this 6.1 kernel
    the first event enabled anywhere (in any instance, by any tracer) makes the kernel
    expand the top-level buffer from its placeholder to its default size: "7 (expanded:
    1408)" becomes "1408". That one transition is the kernel's own doing and is the only
    change accepted (mlockaudit enables its events before it sizes its own buffer, so the
    top-level buffer is never left at the 7 KB placeholder with the flag set)."""
    from live_helpers import tracefs_snapshot
    snapshot = {key: _text(value) for key, value in tracefs_snapshot().items()}
    # the expanded size is reported rounded to whole pages (1410 for "expanded: 1408"):
    # compare in 16 KB steps
    match = re.match(r"^(?:\d+ \(expanded: )?(\d+)\)?\s*$", snapshot["buffer_size_kb"])
    if match:
        snapshot["buffer_size_kb"] = "%d KB (16 KB steps)" % (int(match.group(1)) // 16 * 16)
    return snapshot


def _instances():
    try:
        return sorted(os.listdir(os.path.join(TRACEFS, "instances")))
    except OSError as exc:
        return "error %s" % errno_name(exc.errno)


def _workloads(facts, key, comms, threads_every=3, compat_comms=()):
    """scripts/workload.py once per comm (every n-th with a 2nd thread), then the 32-bit
    workload once per compat comm -> the ground truths (also saved as fact KEY)."""
    from live_helpers import run_workload
    truths = []
    for index, comm in enumerate(comms):
        truths.append(run_workload(comm, thread=(index % threads_every == 0)))
    for comm in compat_comms:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--compat-workload",
                              comm.hex()], check=True, stdout=subprocess.PIPE).stdout
        truths.append(json.loads(out))
    facts(key, truths)
    return truths


# The 32-bit system call entry from a 64-bit process: ``int $0x80`` is served from the
# kernel's ia32 table (__ia32_sys_*), exactly as for a 32-bit program, and audit sees
# arch=i386. long int80(long nr, long a, long b, long c):
#   push rbx; mov eax,edi; mov ebx,esi; mov r8d,edx; mov edx,ecx; mov ecx,r8d;
#   int 0x80; movsxd rax,eax; pop rbx; ret
INT80_CODE = bytes.fromhex("53" "89f8" "89f3" "4189d0" "89ca" "4489c1" "cd80" "4863c0" "5b"
                           "c3")
I386_NR = {"mlock": 150, "munlock": 151, "mlockall": 152, "munlockall": 153, "mlock2": 376}
MAP_32BIT = 0x40


def compat_workload(comm):
    """scripts/workload.py's family of calls, made through the ia32 entry, on a buffer
    below 4 GiB (the 32-bit registers carry the address); prints the same ground truth,
    each call with "arch": "i386"."""
    import ctypes
    import mmap
    from workload import gettid, set_comm
    if comm:
        set_comm(comm)
    code = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(INT80_CODE)
    int80 = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long,
                             ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(code)))
    page = mmap.mmap(-1, 8192, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_32BIT)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    assert addr < 1 << 32, hex(addr)
    log = []

    def call(name, *args):
        padded = (list(args) + [0, 0, 0])[:3]
        log.append({"name": name, "tid": gettid(), "args": list(args),
                    "ret": int80(I386_NR[name], *padded), "arch": "i386"})

    call("mlock2", addr, 8192, 1)
    call("mlock2", addr, 8192, 99)
    call("munlock", addr, 8192)
    call("mlock", addr, 4096)
    call("munlock", addr, 4096)
    call("mlockall", 1 | 2)
    call("munlockall")
    call("mlockall", 0)
    call("mlock", 0, 4096)
    json.dump({"pid": os.getpid(), "comm_hex": comm.hex(), "calls": log, "arch": "i386"},
              sys.stdout)
    sys.stdout.write("\n")


def _run_cli(*args, timeout=180):
    from live_helpers import run_cli
    result = run_cli(*args, run_dir=GUEST_RUN_DIR, timeout=timeout)
    return {"rc": result.returncode, "stdout": _text(result.stdout),
            "stderr": _text(result.stderr)}


def _doctor(facts):
    result = _run_cli("doctor", "--json")
    try:
        result["report"] = json.loads(result["stdout"])
    except ValueError:
        result["report"] = None
    facts("doctor", result)
    return result


def _traced_run(facts, key, tmp, args, comms, threads_every=3, during=None, compat_comms=()):
    """start ARGS, run the workloads, stop: facts KEY.{ready,truths,stop}."""
    from live_helpers import Tracer
    tracer = Tracer(tmp, *args, run_dir=GUEST_RUN_DIR)
    try:
        tracer.wait_ready(timeout=180)
    except AssertionError as exc:
        facts(key + ".ready", {"ok": False, "stderr": str(exc)})
        raise
    facts(key + ".ready", {"ok": True, "stderr": tracer.stderr})
    if during is not None:
        during()
    _workloads(facts, key + ".truths", comms, threads_every, compat_comms)
    time.sleep(1.0)                  # let the reader catch up (TCG is slow)
    rc = tracer.stop(timeout=180)
    facts(key + ".stop", {"rc": rc, "stderr": tracer.stderr, "events": tracer.events()})
    return tracer


def _surface_run(facts, key, tmp, args):
    """start ARGS, the surface workload (each locking call and each look-alike), stop:
    facts KEY.{truth,stop,filters}."""
    from live_helpers import Tracer, run_workload
    tracer = Tracer(tmp, *args, run_dir=GUEST_RUN_DIR)
    tracer.wait_ready(timeout=180)
    import re
    instance = re.search(r"instance=(\S+)", tracer.stderr).group(1)
    group = os.path.basename(instance)
    filters = {}
    for call in ("mmap", "shmctl", "setrlimit", "prlimit64"):
        path = os.path.join(instance, "events", group, call, "filter")
        filters[call] = _read(path).strip() if os.path.exists(path) else None
    facts(key + ".filters", filters)
    facts(key + ".truth", run_workload(b"vm-surface", surface=True))
    time.sleep(1.0)
    rc = tracer.stop(timeout=180)
    facts(key + ".stop", {"rc": rc, "stderr": tracer.stderr, "events": tracer.events()})


def guest_confidentiality(facts, tmp):
    from workload import HOSTILE_COMMS
    from live_helpers import audit_snapshot, our_rules
    facts("lockdown", _read("/sys/kernel/security/lockdown"))
    with open("/proc/mounts") as handle:
        facts("tracefs_mounts", [line.split()[1] for line in handle if " tracefs " in line])
    facts("tracefs_listing", sorted(os.listdir(TRACEFS)) if os.path.isdir(TRACEFS) else None)
    # a probe written where kprobe_events would be, then on a fresh mount of tracefs
    attempts = {}
    for where in (TRACEFS, "/tmp/tracefs-fresh"):
        if where != TRACEFS:
            os.makedirs(where)
            mount = subprocess.run(["mount", "-t", "tracefs", "nodev", where],
                                   stderr=subprocess.PIPE, universal_newlines=True)
            attempts["fresh_mount"] = {"rc": mount.returncode, "stderr": mount.stderr,
                                       "listing": sorted(os.listdir(where))}
        try:
            _append(os.path.join(where, "kprobe_events"), "p:vmtest/x __x64_sys_mlock2")
            attempts[where] = "written"
            _append(os.path.join(where, "kprobe_events"), "-:vmtest/x")
        except OSError as exc:
            attempts[where] = errno_name(exc.errno)
        if where != TRACEFS:
            subprocess.run(["umount", where], check=False)
    facts("kprobe_write", attempts)
    _doctor(facts)
    facts("forced_kprobe", _run_cli("start", "--backend", "tracefs", "--probe", "kprobe",
                                    "-o", "file:" + str(tmp / "forced.jsonl")))
    facts("forced_kprobe.state_left", os.path.exists(os.path.join(GUEST_RUN_DIR, "state.json")))

    audit_before = audit_snapshot()
    facts("audit_before", {"snapshot": _text(repr(audit_before)),
                           "auditctl_l": _run(["auditctl", "-l"]),
                           "auditctl_s": _run(["auditctl", "-s"])})
    facts.step("start with no backend flag, %d workloads" % len(HOSTILE_COMMS))
    _traced_run(facts, "auto", tmp, (), HOSTILE_COMMS, compat_comms=COMPAT_COMMS)
    audit_after = audit_snapshot()
    facts("audit_after", {"snapshot": _text(repr(audit_after)),
                          "same": audit_after == audit_before,
                          "our_rules": len(our_rules()),
                          "auditctl_l": _run(["auditctl", "-l"]),
                          "auditctl_s": _run(["auditctl", "-s"]),
                          "state_left": os.path.exists(os.path.join(GUEST_RUN_DIR,
                                                                    "state.json"))})
    facts.step("audit burst of %d short-lived processes" % BURST)
    _burst(facts, "audit_burst", tmp, ())


def _burst(facts, key, tmp, args):
    """start ARGS, scripts/loadgen.c burst (short-lived processes and threads renamed to
    hostile comms), stop: facts KEY.{truth,parent,stop}."""
    from live_helpers import Tracer, run_burst
    loadgen = os.environ.get("MLOCKAUDIT_VM_LOADGEN")
    tracer = Tracer(tmp, *(tuple(args) + ("--events", "mlock2")), run_dir=GUEST_RUN_DIR)
    tracer.wait_ready(timeout=180)
    truth, parent = run_burst(loadgen, BURST)
    facts(key + ".truth", {"calls": truth, "parent": parent, "loadgen": loadgen})
    time.sleep(1.0)
    rc = tracer.stop(timeout=180)
    facts(key + ".stop", {"rc": rc, "stderr": tracer.stderr, "events": tracer.events()})


def guest_integrity(facts, tmp):
    """lockdown=integrity: kprobes (hostile comms, 32-bit callers, a foreign probe group
    and instance that must survive), the syscall tracepoints (start with no flags), both
    with short-lived renamed processes and threads, then kill -9 and cleanup."""
    from workload import HOSTILE_COMMS
    from live_helpers import Tracer
    facts("lockdown", _read("/sys/kernel/security/lockdown"))
    kprobe_events = os.path.join(TRACEFS, "kprobe_events")
    facts("global_buffer_initial", _read(os.path.join(TRACEFS, "buffer_size_kb")))
    facts("initial", _snapshot())
    _doctor(facts)
    # Another tool's probe group and instance: they must survive everything we do.
    _append(kprobe_events, FOREIGN_PROBE)
    os.mkdir(os.path.join(TRACEFS, "instances", FOREIGN_INSTANCE))
    before = _snapshot()
    facts("before", before)

    facts.step("kprobe run, %d workloads" % len(HOSTILE_COMMS))

    def during():
        facts("running", {"kprobe_events": _read(kprobe_events), "instances": _instances()})
    _traced_run(facts, "kprobe", tmp, ("--backend", "tracefs", "--probe", "kprobe"),
                HOSTILE_COMMS, during=during, compat_comms=COMPAT_COMMS)
    facts("after_kprobe", _snapshot())
    facts.step("kprobe run of the locking surface (mmap, shmctl, setrlimit, prlimit64)")
    _surface_run(facts, "kprobe_surface", tmp, ("--backend", "tracefs", "--probe", "kprobe"))
    facts("after_kprobe_surface", _snapshot())
    facts.step("kprobe burst of %d short-lived processes" % BURST)
    _burst(facts, "kprobe_burst", tmp, ("--backend", "tracefs", "--probe", "kprobe"))
    facts.step("start with no flags")
    comms = (HOSTILE_COMMS[0], HOSTILE_COMMS[2], HOSTILE_COMMS[8], HOSTILE_COMMS[10])
    _traced_run(facts, "auto", tmp, (), comms, threads_every=2)
    facts("after_auto", _snapshot())
    facts.step("tracepoint burst of %d short-lived processes" % BURST)
    _burst(facts, "tracepoint_burst", tmp, ("--backend", "tracefs", "--probe", "tracepoint"))
    facts("after_bursts", _snapshot())

    facts.step("kill -9, then cleanup")
    tracer = Tracer(tmp, "--backend", "tracefs", "--probe", "kprobe", run_dir=GUEST_RUN_DIR)
    tracer.wait_ready(timeout=180)
    facts("killed.pid", tracer.proc.pid)
    tracer.stop(signal.SIGKILL)
    facts("after_kill", _snapshot())
    facts("cleanup", _run_cli("cleanup"))
    facts("after_cleanup", _snapshot())
    facts("cleanup_again", _run_cli("cleanup"))

    _append(kprobe_events, "-:" + FOREIGN_PROBE.split()[0][2:])
    os.rmdir(os.path.join(TRACEFS, "instances", FOREIGN_INSTANCE))
    facts("final", _snapshot())
    facts("global_buffer_final", _read(os.path.join(TRACEFS, "buffer_size_kb")))


def _run(argv):
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    return {"rc": result.returncode, "output": result.stdout}


GUEST_CASES = {"confidentiality": guest_confidentiality, "integrity": guest_integrity}


def guest_main(case):
    import pathlib
    import tempfile
    exchange = os.environ.get("MLOCKAUDIT_VM_EXCHANGE")
    # Never trace the host: this part runs only in the qemu guest that vmlib boots.
    if os.environ.get("MLOCKAUDIT_VM") != "1" or not exchange \
            or os.uname().nodename != vmlib.GUEST_HOSTNAME:
        sys.exit("test_vm_kernel.py --guest runs only inside the qemu guest (scripts/vmlib.py)")
    os.environ["MLOCKAUDIT_RUN_DIR"] = GUEST_RUN_DIR
    facts = Facts(os.path.join(exchange, FACTS))
    facts("kernel", {"release": os.uname().release, "cmdline": _read("/proc/cmdline").strip(),
                     "python": sys.executable})
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="vm-kernel-", dir="/tmp"))
    GUEST_CASES[case](facts, tmp)
    facts("done", time.monotonic() - facts.started)
    facts.step("done")


# =========================================================================== on the host

def _boot(case, kernel_params, exchange, vm):
    """Run the guest half of CASE in a fresh guest of the kernel ``vm`` (vm_ready's
    (Kernel, initramfs)) -> (facts dict, VMResult)."""
    from live_helpers import build_loadgen
    started = time.monotonic()
    kernel = vm[0]
    build_loadgen(exchange)
    result = vmlib.run_in_vm(
        [venv_python(), os.path.abspath(__file__), "--guest", case],
        kernel_params=kernel_params, timeout=BOOT_TIMEOUT, exchange_dir=str(exchange),
        cwd=ROOT, env={"MLOCKAUDIT_RUN_DIR": GUEST_RUN_DIR,
                       "MLOCKAUDIT_VM_LOADGEN": vmlib.GUEST_EXCHANGE + "/loadgen"},
        kernel=kernel.line)
    facts = {}
    path = os.path.join(str(exchange), FACTS)
    if os.path.exists(path):
        with open(path) as handle:
            for line in handle:
                record = json.loads(line)
                facts[record["key"]] = record["value"]
    sys.stderr.write("vm %s: %.1f s in all (boot %.1f s), kernel %s (%s %s)\n%s" % (
        case, time.monotonic() - started, result.boot_seconds or -1, result.kernel,
        kernel.package, kernel.version, result.output))
    assert result.kernel == kernel.release
    assert result.returncode == 0 and "done" in facts, (
        "the guest script failed (exit %d):\n%s\n--- console ---\n%s"
        % (result.returncode, result.output, result.console_tail))
    return facts, result


@pytest.fixture(scope="module", params=KERNELS, ids=KERNELS)
def vm_ready(request):
    """Install qemu/busybox, download and unpack the kernel of this matrix line, build the
    initramfs, once per line and before any timeout starts -> (Kernel, initramfs). A
    failure here (no network, no such package) is an error of the tests that need it, not
    a skip."""
    try:
        return vmlib.prepare(request.param)
    except (subprocess.CalledProcessError, vmlib.VMError) as exc:
        failure = str(exc)
    pytest.fail("preparing the qemu guest (kernel %s) failed: %s (network? mirror?)"
                % (request.param, failure), pytrace=False)


def _calls(events, truths, with_tid=True):
    from live_helpers import comparable_calls
    return comparable_calls(events, truths, with_tid)


def _check_traced(facts, key, probe, with_tid=True):
    stop = facts[key + ".stop"]
    truths = facts[key + ".truths"]
    events = stop["events"]
    assert stop["rc"] == 0, stop["stderr"]
    got, want = _calls(events, truths, with_tid)
    assert got == want
    assert len(want) == sum(len(truth["calls"]) for truth in truths) > 0
    names = {call[3] for call in want}
    assert names == {"mlock", "mlock2", "munlock", "mlockall", "munlockall"}
    assert any(call[5] < 0 for call in want) and any(call[5] == 0 for call in want)
    assert "events=%d lost=0" % len(events) in stop["stderr"]
    assert "PROBLEM" not in stop["stderr"] and "Traceback" not in stop["stderr"]
    # the caller's arch, the syscall number on it, and Tracee's id (the x86_64 number,
    # whatever the caller), munlockall included: its x86_64 and ia32 entries are one function
    arch_of = {truth["pid"]: truth.get("arch", "x86_64") for truth in truths}
    for event in events:
        assert event["mlockaudit"].get("incomplete") is None, event
        if probe is not None:
            assert event["mlockaudit"]["probe"] == probe, event
        arch, name = arch_of[event["hostProcessId"]], event["eventName"]
        assert (event["mlockaudit"]["arch"], event["mlockaudit"]["syscallNumber"],
                event["eventId"]) == (arch, SYSCALL_NUMBERS[arch][name],
                                      str(SYSCALL_NUMBERS["x86_64"][name])), event
    return events


def _mlockaudit_lines(text):
    return [line for line in text.splitlines() if "mlockaudit_" in line]


def test_lockdown_confidentiality_falls_back_to_audit(vm_ready, tmp_path):
    facts, _ = _boot("confidentiality", "lockdown=confidentiality audit=1", tmp_path,
                     vm_ready)
    assert facts["lockdown"].split() == ["none", "integrity", "[confidentiality]"]
    # tracefs: nothing usable, wherever it is mounted; kprobes refused
    assert facts["tracefs_listing"] in (None, [])
    attempts = facts["kprobe_write"]
    assert attempts["fresh_mount"]["listing"] == []
    assert attempts[TRACEFS] in ("EPERM", "ENOENT") and attempts["/tmp/tracefs-fresh"] in (
        "EPERM", "ENOENT"), attempts
    doctor = facts["doctor"]
    report = doctor["report"]
    assert doctor["rc"] == 0 and report is not None, doctor
    assert report["lockdown"] == "confidentiality"
    assert report["backends"]["tracefs"]["available"] is False
    assert "confidentiality" in report["backends"]["tracefs"]["why"]
    assert report["backends"]["audit"]["available"] is True
    assert report["backends"]["audit"]["enabled"] == 1
    assert report["selected"] == "audit"
    assert report["bpf"]["likely_works"] is False
    # asking for kprobes anyway is refused, with the reason, and leaves nothing behind
    forced = facts["forced_kprobe"]
    assert forced["rc"] == 1 and "lockdown=confidentiality" in forced["stderr"], forced
    assert "Traceback" not in forced["stderr"] and not facts["forced_kprobe.state_left"]
    # start with no backend flag picks audit and catches every call (no thread ids)
    assert "backend audit" in facts["auto.ready"]["stderr"]
    events = _check_traced(facts, "auto", None, with_tid=False)
    for event in events:
        assert event["mlockaudit"]["backend"] == "audit" and event["hostThreadId"] is None
        assert event["mlockaudit"]["keys"] == ["mlockaudit"]
    # the audit rules and settings are as before
    after = facts["audit_after"]
    assert after["same"] and after["our_rules"] == 0 and not after["state_left"], after
    assert "mlockaudit" not in after["auditctl_l"]["output"]
    assert after["auditctl_l"] == facts["audit_before"]["auditctl_l"]
    # short-lived processes and threads renamed to hostile comms: audit's records say who
    _check_burst(facts, "audit_burst", "audit")


def _check_burst(facts, key, backend):
    """Every call of the burst with its true tgid, tid (tracefs), ppid, comm and exe."""
    stop, truth = facts[key + ".stop"], facts[key + ".truth"]
    assert stop["rc"] == 0 and "lost=0" in stop["stderr"], stop["stderr"]
    pids = {call["pid"] for call in truth["calls"]}
    events = [e for e in stop["events"] if e["hostProcessId"] in pids]
    raw = lambda e: bytes.fromhex(e["mlockaudit"]["processNameHex"]) \
        if e["mlockaudit"].get("processNameHex") else e["processName"].encode()  # noqa: E731
    got = sorted((e["hostProcessId"], e["hostThreadId"] if backend != "audit" else None,
                  e["hostParentProcessId"], raw(e), e["returnValue"]) for e in events)
    want = sorted((c["pid"], c["tid"] if backend != "audit" else None, c["ppid"],
                   bytes.fromhex(c["comm_hex"]), c["ret"]) for c in truth["calls"])
    assert got == want and len(want) == BURST + (BURST + 2) // 3
    for event in events:
        if backend == "audit":
            assert event["executable"]["path"] == truth["loadgen"]
        else:
            assert event["executable"]["path"] == truth["loadgen"]
            assert event["mlockaudit"]["identity"] == "stream"


def _check_surface(facts, key):
    from test_live_surface import expected, reported
    assert facts[key + ".filters"] == {
        "mmap": "flags & 0x2000", "shmctl": "cmd == 11 || cmd == 12",
        "setrlimit": "resource == 8", "prlimit64": "resource == 8 && new_rlim != 0"}
    stop = facts[key + ".stop"]
    assert stop["rc"] == 0, stop["stderr"]
    truth = facts[key + ".truth"]
    assert reported(stop["events"], truth["pid"]) == expected(truth), stop["stderr"]


def test_lockdown_integrity_kprobes_tracepoints_identity_and_cleanup(vm_ready, tmp_path):
    facts, _ = _boot("integrity", "lockdown=integrity", tmp_path, vm_ready)
    assert facts["kernel"]["release"] != os.uname().release
    assert facts["lockdown"].split() == ["none", "[integrity]", "confidentiality"]
    report = facts["doctor"]["report"]
    assert facts["doctor"]["rc"] == 0 and report is not None, facts["doctor"]
    assert report["lockdown"] == "integrity"
    assert report["backends"]["tracefs"]["available"] and report["backends"]["tracefs"]["kprobes"]
    # audit is there but disabled: tracefs is preferred (doctor.select_backend's order)
    assert report["backends"]["audit"]["available"] and report["backends"]["audit"]["enabled"] == 0
    assert report["selected"] == "tracefs" and "audit is disabled" in report["why"], report["why"]

    # kprobes work under integrity: every call, 32-bit callers included
    ready = facts["kprobe.ready"]["stderr"]
    assert "backend=tracefs probe=kprobe" in ready and "__x64_sys_mlock2" in ready
    running = facts["running"]
    probes = _mlockaudit_lines(running["kprobe_events"])
    # entry + return for each of the 5 calls, native and ia32 (munlockall's entries alias
    # one function: probed once), and for the 4 calls of the locking surface, native only
    assert len(probes) == 18 + 8, running["kprobe_events"]
    assert "othertool/x" in running["kprobe_events"]
    assert len([n for n in running["instances"] if n.startswith("mlockaudit_")]) == 1
    _check_traced(facts, "kprobe", "kprobe")
    # nothing of ours left after a stop; the foreign probe group and instance are intact
    assert facts["after_kprobe"] == facts["before"]
    # the locking surface through kprobes: the filters run in the kernel, exactly the
    # locking calls arrive with true tid, args and return
    _check_surface(facts, "kprobe_surface")
    assert facts["after_kprobe_surface"] == facts["before"]
    # no flags: tracefs (audit is disabled), with the syscall tracepoints
    ready = facts["auto.ready"]["stderr"]
    assert "backend tracefs: audit is disabled" in ready and "probe=tracepoint" in ready, ready
    _check_traced(facts, "auto", "tracepoint")
    assert facts["after_auto"] == facts["before"]
    # short-lived processes and threads renamed to hostile comms: true identity
    _check_burst(facts, "kprobe_burst", "kprobe")
    _check_burst(facts, "tracepoint_burst", "tracepoint")
    assert facts["after_bursts"] == facts["before"]

    # kill -9 leaves an instance and a probe group named after the dead pid...
    killed = facts["after_kill"]
    name = "mlockaudit_%d_" % facts["killed.pid"]
    left_instances = [n for n in killed["instances"] if n.startswith("mlockaudit_")]
    assert len(left_instances) == 1 and left_instances[0].startswith(name)
    left_probes = _mlockaudit_lines(killed["kprobe_events"])
    assert len(left_probes) == 18 + 8 and all(left_instances[0] + "/" in line
                                          for line in left_probes)
    # ...and cleanup removes exactly those
    cleanup = facts["cleanup"]
    assert cleanup["rc"] == 0 and "undid a dead run" in cleanup["stdout"], cleanup
    assert facts["after_cleanup"] == facts["before"]
    assert "othertool/x" in facts["after_cleanup"]["kprobe_events"]
    assert FOREIGN_INSTANCE in facts["after_cleanup"]["instances"]
    assert facts["cleanup_again"]["stdout"].strip() == "nothing to clean up"
    assert facts["final"] == facts["initial"]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--guest" and sys.argv[2] in GUEST_CASES:
        guest_main(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "--compat-workload":
        compat_workload(bytes.fromhex(sys.argv[2]))
    else:
        sys.exit("usage: test_vm_kernel.py --guest %s   (in the qemu guest only)"
                 % "|".join(sorted(GUEST_CASES)))
