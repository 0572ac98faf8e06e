"""Run a command as root inside a qemu guest booting a real Debian kernel (with kprobes).

This machine's kernel has no kprobes; Debian's ``linux-image-6.1.0-*-amd64`` has them and
boots under ``qemu-system-x86_64 -accel tcg`` in a few seconds. The guest is a busybox
initramfs that loads the virtio/9p modules, mounts the host's ``/`` read-only over 9p,
mounts proc, sys, devtmpfs, tracefs, securityfs and tmpfs on /tmp and /run, chroots into
the host's root and runs the command as root. So the host's Python, venv and repository
run unchanged against the guest kernel, and nothing touches the host kernel's state.

    from vmlib import run_in_vm
    result = run_in_vm("uname -r", kernel_params="lockdown=integrity audit=1")
    result.returncode, result.output, result.console_tail

What the command writes must go to ``$MLOCKAUDIT_VM_EXCHANGE`` (a read-write 9p share of a
host directory: pass ``exchange_dir`` to read it afterwards) or to /tmp (guest tmpfs).

Downloads and builds are cached in /var/cache/mlockaudit-vm (``MLOCKAUDIT_VM_CACHE``).
``MLOCKAUDIT_VM_KERNEL_PACKAGE`` names the kernel package to use instead of the cached or
current one. Needs root (apt-get, and qemu exports ``/`` with security_model=none).
Standard library only; Python 3.8+.
"""

import collections
import fcntl
import glob
import gzip
import hashlib
import json
import lzma
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

CACHE_DIR = os.environ.get("MLOCKAUDIT_VM_CACHE", "/var/cache/mlockaudit-vm")
APT_PACKAGES = ("qemu-system-x86", "busybox-static", "cpio")
#: Loaded in this order, the whole list retried a few times (no modules.dep is shipped);
#: a module missing from a kernel version (built in, or not split out yet) is skipped.
MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
           "virtio_pci", "netfs", "fscache", "9pnet", "9pnet_virtio", "9p")
GUEST_EXCHANGE = "/run/mlockaudit-exchange"
GUEST_HOSTNAME = "mlockaudit-vm"
CONSOLE_TAIL_LINES = 60
QEMU = "qemu-system-x86_64"

# Markers the guest's /init prints on the console (the host looks for them).
MARK_READY = "MLOCKAUDIT-VM: running command"
MARK_DONE = "MLOCKAUDIT-VM: command exit status"

VMResult = collections.namedtuple("VMResult", "returncode output console_tail boot_seconds "
                                  "total_seconds kernel output_bytes")
VMResult.__doc__ = """The command's exit status and output (stdout and stderr together,
decoded as UTF-8 with replacement), the last console lines, seconds from qemu start to
the command start, seconds for the whole run, the guest kernel's release, and the output
as raw bytes."""


class VMError(RuntimeError):
    """The guest did not run the command to completion (boot failure, timeout, setup).
    ``console_tail`` holds the last console lines; ``output`` what the command printed."""

    def __init__(self, message, console_tail="", output=""):
        text = message
        if console_tail:
            text += "\n--- last console lines ---\n" + console_tail
        RuntimeError.__init__(self, text)
        self.console_tail = console_tail
        self.output = output


def log(message):
    if os.environ.get("MLOCKAUDIT_VM_QUIET") != "1":
        sys.stderr.write("vmlib: %s\n" % message)
        sys.stderr.flush()


# --------------------------------------------------------------------------- host setup

def _run(cmd, **kwargs):
    kwargs.setdefault("check", True)
    return subprocess.run(cmd, **kwargs)


def _installed(package):
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            universal_newlines=True)
    return result.returncode == 0 and result.stdout.strip().endswith(" installed")


def _apt_env():
    env = dict(os.environ)
    env["DEBIAN_FRONTEND"] = "noninteractive"
    return env


_APT_LOCK_WAIT = ["-o", "DPkg::Lock::Timeout=300"]


def ensure_host_packages(packages=APT_PACKAGES):
    """apt-get install what is missing, without starting any packaged service."""
    missing = [p for p in packages if not _installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise VMError("missing packages %s and not root to install them" % " ".join(missing))
    log("installing %s" % " ".join(missing))
    policy = "/usr/sbin/policy-rc.d"
    created = False
    if not os.path.lexists(policy):
        with open(policy, "w") as handle:
            handle.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
        created = True
    try:
        _run(["apt-get"] + _APT_LOCK_WAIT + ["update", "-qq"], env=_apt_env(),
             stdout=subprocess.DEVNULL)
        _run(["apt-get"] + _APT_LOCK_WAIT + ["install", "-y", "-qq", "--no-install-recommends"]
             + missing, env=_apt_env(), stdout=subprocess.DEVNULL)
    finally:
        if created:
            os.unlink(policy)


def _current_kernel_package():
    """The one linux-image-6.1.0-N-amd64 package linux-image-amd64 depends on now."""
    name_re = re.compile(r"^linux-image-\d+\.\d+\.\d+-\d+-amd64$")
    out = _run(["apt-cache", "depends", "linux-image-amd64"], stdout=subprocess.PIPE,
               universal_newlines=True, check=False).stdout
    for line in out.splitlines():
        word = line.strip().split(":", 1)
        if len(word) == 2 and word[0].strip().lstrip("|") == "Depends":
            name = word[1].strip()
            if name_re.match(name):
                return name
    out = _run(["apt-cache", "search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-amd64$"],
               stdout=subprocess.PIPE, universal_newlines=True).stdout
    names = sorted((line.split(" ", 1)[0] for line in out.splitlines() if line.strip()),
                   key=lambda n: int(n.split("-")[3]))
    return names[-1] if names else None


class Kernel(object):
    """An extracted kernel in the cache: ``vmlinuz``, loadable ``modules`` (name -> path)."""

    def __init__(self, directory):
        self.directory = directory
        with open(os.path.join(directory, "kernel.json")) as handle:
            meta = json.load(handle)
        self.package = meta["package"]
        self.version = meta["version"]
        self.release = meta["release"]
        self.vmlinuz = os.path.join(directory, "vmlinuz")
        self.modules = collections.OrderedDict(
            (name, os.path.join(directory, "modules", name + ".ko"))
            for name in meta["modules"])

    def __repr__(self):
        return "Kernel(%s %s)" % (self.package, self.version)


def _extract_kernel(package, target):
    """apt-get download one package into the cache, unpack vmlinuz and the modules."""
    debs = glob.glob(os.path.join(CACHE_DIR, "debs", package + "_*.deb"))
    if not debs:
        os.makedirs(os.path.join(CACHE_DIR, "debs"), exist_ok=True)
        try:                               # let apt's sandbox user write the download
            os.chown(os.path.join(CACHE_DIR, "debs"), pwd.getpwnam("_apt").pw_uid, -1)
        except (KeyError, OSError):
            pass
        log("downloading %s" % package)
        try:
            _run(["apt-get", "download", package], cwd=os.path.join(CACHE_DIR, "debs"),
                 env=_apt_env(), stdout=subprocess.DEVNULL)
        except subprocess.CalledProcessError:
            ensure_apt_lists(force=True)
            _run(["apt-get", "download", package], cwd=os.path.join(CACHE_DIR, "debs"),
                 env=_apt_env(), stdout=subprocess.DEVNULL)
        debs = glob.glob(os.path.join(CACHE_DIR, "debs", package + "_*.deb"))
    deb = sorted(debs)[-1]
    version = _run(["dpkg-deb", "-f", deb, "Version"], stdout=subprocess.PIPE,
                   universal_newlines=True).stdout.strip()
    scratch = tempfile.mkdtemp(prefix="extract-", dir=CACHE_DIR)
    try:
        log("extracting %s" % os.path.basename(deb))
        _run(["dpkg-deb", "-x", deb, scratch])
        vmlinuz = sorted(glob.glob(os.path.join(scratch, "boot", "vmlinuz-*")))
        if not vmlinuz:
            raise VMError("no /boot/vmlinuz-* in %s" % deb)
        release = os.path.basename(vmlinuz[0])[len("vmlinuz-"):]
        tree = {}
        for path in glob.glob(os.path.join(scratch, "lib", "modules", release, "kernel", "**",
                                           "*.ko*"), recursive=True):
            base = os.path.basename(path)
            tree[base.split(".ko", 1)[0].replace("-", "_")] = path
        staged = os.path.join(scratch, "out")
        os.makedirs(os.path.join(staged, "modules"))
        shutil.copyfile(vmlinuz[0], os.path.join(staged, "vmlinuz"))
        found = []
        for name in MODULES:
            path = tree.get(name)
            if path is None:
                continue                   # built in or absent in this version: skip it
            _copy_module(path, os.path.join(staged, "modules", name + ".ko"))
            found.append(name)
        with open(os.path.join(staged, "kernel.json"), "w") as handle:
            json.dump({"package": package, "version": version, "release": release,
                       "deb": os.path.basename(deb), "modules": found}, handle, indent=1)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.rename(staged, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _copy_module(src, dst):
    """Copy a module, decompressing .ko.xz (busybox insmod wants plain ELF)."""
    if src.endswith(".xz"):
        with lzma.open(src) as inp, open(dst, "wb") as out:
            shutil.copyfileobj(inp, out)
    elif src.endswith(".gz"):
        with gzip.open(src) as inp, open(dst, "wb") as out:
            shutil.copyfileobj(inp, out)
    elif src.endswith(".zst"):
        _run(["zstd", "-q", "-d", "-f", "-o", dst, src])
    else:
        shutil.copyfile(src, dst)


_apt_updated = []


def ensure_apt_lists(force=False):
    if _apt_updated and not force:
        return
    _run(["apt-get"] + _APT_LOCK_WAIT + ["update", "-qq"], env=_apt_env(),
         stdout=subprocess.DEVNULL)
    _apt_updated.append(True)


def ensure_kernel(package=None):
    """The cached kernel (downloading and extracting it the first time) -> Kernel.

    Without ``package`` (or MLOCKAUDIT_VM_KERNEL_PACKAGE) the kernel cached by an earlier
    run is reused, so the tests keep one kernel until the cache is cleared."""
    package = package or os.environ.get("MLOCKAUDIT_VM_KERNEL_PACKAGE")
    current = os.path.join(CACHE_DIR, "current")
    if package is None and os.path.exists(os.path.join(current, "kernel.json")):
        return Kernel(os.path.realpath(current))
    if package is None:
        package = _current_kernel_package()
        if not package:
            ensure_apt_lists(force=True)
            package = _current_kernel_package()
        if not package:
            raise VMError("apt knows no linux-image-6.1.0-N-amd64 package (sources.list?)")
    target = os.path.join(CACHE_DIR, "kernels", package)
    if not os.path.exists(os.path.join(target, "kernel.json")):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        _extract_kernel(package, target)
    if not os.path.exists(current):
        os.symlink(os.path.relpath(target, CACHE_DIR), current)
    return Kernel(target)


# --------------------------------------------------------------------------- initramfs

INIT_SCRIPT = r"""#!/bin/sh
# mlockaudit qemu guest init (busybox): load 9p, mount the host's root read-only and the
# exchange share, chroot, run the command, report its status, power off.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
hostname @HOSTNAME@
fail() {
    echo "MLOCKAUDIT-VM: FAILED: $*"
    poweroff -f
    sleep 5
}
for attempt in 1 2 3 4 5; do
    for m in @MODULES@; do
        grep -q "^$m " /proc/modules && continue
        [ -e /modules/$m.ko ] && insmod /modules/$m.ko 2>/dev/null
    done
done
for m in @MODULES@; do
    [ -e /modules/$m.ko ] && ! grep -q "^$m " /proc/modules && echo "MLOCKAUDIT-VM: module $m not loaded"
done
mkdir -p /host /exchange
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro host /host \
    || fail "mount of the host root over 9p"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 exchange /exchange \
    || fail "mount of the exchange share"
[ -f /exchange/command.sh ] || fail "no command.sh in the exchange share"
# host directories under /tmp or /run (a checkout in /tmp, say) would be hidden by the
# guest's own tmpfs there: held aside now, put back after
if [ -s /exchange/binds ]; then
    while read -r path; do
        mkdir -p "/keep$path" && mount -o bind "/host$path" "/keep$path" || fail "hold $path"
    done < /exchange/binds
fi
mount -t proc proc /host/proc || fail "proc"
mount -t sysfs sysfs /host/sys || fail "sysfs"
mount -t devtmpfs devtmpfs /host/dev || fail "devtmpfs"
mount -t devpts devpts /host/dev/pts 2>/dev/null
mount -t tmpfs tmpfs /host/dev/shm 2>/dev/null
mount -t tracefs nodev /host/sys/kernel/tracing || echo "MLOCKAUDIT-VM: no tracefs"
mount -t securityfs securityfs /host/sys/kernel/security 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /host/tmp || fail "tmpfs /tmp"
mount -t tmpfs -o mode=755 tmpfs /host/run || fail "tmpfs /run"
if [ -s /exchange/binds ]; then
    while read -r path; do
        mkdir -p "/host$path" && mount -o bind "/keep$path" "/host$path" || fail "bind $path"
    done < /exchange/binds
fi
mkdir -p /host@EXCHANGE@
mount -o bind /exchange /host@EXCHANGE@ || fail "bind of the exchange share"
echo "@MARK_READY@"
chroot /host /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 \
    MLOCKAUDIT_VM=1 MLOCKAUDIT_VM_EXCHANGE=@EXCHANGE@ \
    /bin/sh @EXCHANGE@/command.sh </dev/null >/host@EXCHANGE@/output 2>&1
status=$?
echo $status > /host@EXCHANGE@/status
sync
echo "@MARK_DONE@ $status"
poweroff -f
sleep 5
"""


def _init_text():
    return (INIT_SCRIPT.replace("@HOSTNAME@", GUEST_HOSTNAME)
            .replace("@MODULES@", " ".join(MODULES))
            .replace("@EXCHANGE@", GUEST_EXCHANGE)
            .replace("@MARK_READY@", MARK_READY)
            .replace("@MARK_DONE@", MARK_DONE))


def _busybox():
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(path):
            return path
    raise VMError("busybox-static is not installed")


def ensure_initramfs(kernel):
    """The busybox initramfs for ``kernel``, cached by a hash of everything in it."""
    init = _init_text().encode()
    busybox = _busybox()
    digest = hashlib.sha256(init)
    for path in [busybox] + list(kernel.modules.values()):
        digest.update(path.encode() + b"\0")
        with open(path, "rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    target = os.path.join(CACHE_DIR, "initramfs-%s.cpio.gz" % digest.hexdigest()[:16])
    if os.path.exists(target):
        return target
    log("building %s" % os.path.basename(target))
    stage = tempfile.mkdtemp(prefix="initramfs-", dir=CACHE_DIR)
    try:
        for sub in ("bin", "sbin", "dev", "proc", "sys", "host", "modules", "tmp"):
            os.mkdir(os.path.join(stage, sub))
        shutil.copyfile(busybox, os.path.join(stage, "bin", "busybox"))
        os.chmod(os.path.join(stage, "bin", "busybox"), 0o755)
        applets = _run([busybox, "--list"], stdout=subprocess.PIPE,
                       universal_newlines=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                os.symlink("busybox", os.path.join(stage, "bin", applet))
        for name, path in kernel.modules.items():
            shutil.copyfile(path, os.path.join(stage, "modules", name + ".ko"))
        with open(os.path.join(stage, "init"), "wb") as handle:
            handle.write(init)
        os.chmod(os.path.join(stage, "init"), 0o755)
        names = _run(["find", ".", "-mindepth", "1"], cwd=stage, stdout=subprocess.PIPE).stdout
        archive = _run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=stage,
                       input=names, stdout=subprocess.PIPE).stdout
        partial = target + ".part%d" % os.getpid()
        with gzip.open(partial, "wb", compresslevel=6) as handle:
            handle.write(archive)
        os.rename(partial, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target


class _CacheLock(object):
    """An exclusive flock on the cache while preparing (parallel tests, several users)."""

    def __enter__(self):
        os.makedirs(CACHE_DIR, exist_ok=True)
        self.handle = open(os.path.join(CACHE_DIR, ".lock"), "w")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def prepare(package=None):
    """Install what the host needs, fetch the kernel, build the initramfs
    -> (Kernel, initramfs path). Idempotent and cached."""
    with _CacheLock():
        if shutil.which(QEMU) is None or not _installed("busybox-static") \
                or shutil.which("cpio") is None:
            ensure_host_packages()
        kernel = ensure_kernel(package)
        return kernel, ensure_initramfs(kernel)


# --------------------------------------------------------------------------- running

def _hidden_paths(*paths):
    """Host directories the guest's tmpfs on /tmp and /run would hide: the working
    directory (a checkout under /tmp) and the repository this harness belongs to."""
    wanted = []
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for path in paths + (repo,):
        if not path:
            continue
        path = os.path.realpath(path)
        if (path.startswith("/tmp/") or path.startswith("/run/")) and path not in wanted:
            wanted.append(path)
    return wanted


def _command_script(command, cwd, env):
    """The guest shell script: optional cd and exports, then the command."""
    if not isinstance(command, str):
        command = " ".join(shlex.quote(str(part)) for part in command)
    lines = ["# written by vmlib.run_in_vm"]
    for key, value in sorted((env or {}).items()):
        lines.append("export %s=%s" % (key, shlex.quote(str(value))))
    if cwd:
        lines.append("cd %s || { echo 'vmlib: no directory %s in the guest (the host root is "
                     "read-only there)' >&2; exit 125; }"
                     % (shlex.quote(cwd), cwd.replace("'", "")))
    lines.append(command)
    return "\n".join(lines) + "\n"


_TERMINAL_CODES = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]|c)")


def _console_reader(stream, sink, marks):
    for raw in iter(stream.readline, b""):
        line = _TERMINAL_CODES.sub("", raw.decode("utf-8", "replace")).rstrip("\r\n")
        sink.append(line)
        if MARK_READY in line and "ready" not in marks:
            marks["ready"] = time.monotonic()
    stream.close()


def run_in_vm(command, kernel_params="", timeout=240, exchange_dir=None, cwd=None, env=None,
              memory_mb=2048, cpus=2, check=False):
    """Boot the guest, run ``command`` (a shell string, or an argv list) as root in the
    host's root filesystem (read-only) and power off -> VMResult.

    ``kernel_params`` is appended to the kernel command line (``lockdown=integrity
    audit=1``). ``exchange_dir``: a host directory shared read-write with the guest at
    ``$MLOCKAUDIT_VM_EXCHANGE`` (default: a temporary one, removed afterwards). ``cwd``:
    the guest directory to run in (default: the host's current directory). ``env``: extra
    environment variables. Raises VMError (with the last console lines) when the guest does
    not get the command to completion within ``timeout`` seconds; with ``check``, also when
    the command exits non-zero."""
    started = time.monotonic()
    kernel, initramfs = prepare()
    if cwd is None:
        cwd = os.getcwd()
    own_exchange = exchange_dir is None
    exchange = tempfile.mkdtemp(prefix="mlockaudit-vm-") if own_exchange \
        else os.path.abspath(exchange_dir)
    os.makedirs(exchange, exist_ok=True)
    for name in ("output", "status"):
        if os.path.exists(os.path.join(exchange, name)):
            os.unlink(os.path.join(exchange, name))
    with open(os.path.join(exchange, "command.sh"), "w") as handle:
        handle.write(_command_script(command, cwd, env))
    with open(os.path.join(exchange, "binds"), "w") as handle:
        handle.write("".join("%s\n" % path for path in _hidden_paths(cwd)))
    append = "console=ttyS0 panic=-1 oops=panic quiet loglevel=4 %s" % kernel_params
    cmd = [QEMU, "-accel", "tcg", "-m", str(memory_mb), "-smp", str(cpus), "-nographic",
           "-no-reboot", "-nic", "none", "-kernel", kernel.vmlinuz, "-initrd", initramfs,
           "-append", append.strip(),
           "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,"
                      "multidevs=remap",
           "-virtfs", "local,path=%s,mount_tag=exchange,security_model=none" % exchange]
    console = collections.deque(maxlen=4000)
    marks = {}
    qemu_started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    reader = threading.Thread(target=_console_reader, args=(proc.stdout, console, marks))
    reader.daemon = True
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=max(1, timeout - (qemu_started - started)))
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    tail = "\n".join(list(console)[-CONSOLE_TAIL_LINES:])
    raw, status = b"", None
    try:
        with open(os.path.join(exchange, "output"), "rb") as handle:
            raw = handle.read()
        with open(os.path.join(exchange, "status")) as handle:
            status = int(handle.read().strip())
    except (OSError, ValueError):
        pass
    finally:
        if own_exchange:
            shutil.rmtree(exchange, ignore_errors=True)
    output = raw.decode("utf-8", "replace")
    boot = marks["ready"] - qemu_started if "ready" in marks else None
    if timed_out:
        raise VMError("the guest did not finish within %ss (%s)" % (
            timeout, "command still running" if boot is not None else "no boot"),
            tail, output)
    if status is None:
        raise VMError("the guest stopped without running the command (qemu exit %s)"
                      % proc.returncode, tail, output)
    result = VMResult(status, output, tail, boot, time.monotonic() - started, kernel.release,
                      raw)
    if check and status != 0:
        raise VMError("the command exited %d:\n%s" % (status, output), tail, output)
    return result


def main(argv=None):
    """``python3 vmlib.py prepare``: install, download and build, print what is cached."""
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["prepare"]:
        sys.exit("usage: vmlib.py prepare   (use scripts/vm-test to run commands)")
    kernel, initramfs = prepare()
    print("kernel %s %s (%s)\n  %s\n  modules: %s\ninitramfs %s" % (
        kernel.package, kernel.version, kernel.release, kernel.vmlinuz,
        " ".join(kernel.modules), initramfs))


if __name__ == "__main__":
    main()
