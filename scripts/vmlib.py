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

Kernels: ``run_in_vm(..., kernel="5.10")`` (or ``scripts/vm-test --kernel 6.12``) names a
line of the matrix ``KERNEL_LINES``: Debian 11's 5.10, Debian 12's 6.1, Debian 13's 6.12.
The newest amd64 image of the line is resolved from its suite's ``Packages`` index on the
Debian mirror apt uses here (read from /etc/apt/sources.list*, ``MLOCKAUDIT_VM_MIRROR``
overrides it; the index is checked against the suite's ``InRelease``, verified with gpgv
and Debian's archive keyring, and the .deb against the index's SHA256), downloaded with
urllib and cached: a line keeps its kernel until the cache is cleared or
``MLOCKAUDIT_VM_REFRESH=1``. The machine's own apt sources and lists are never touched.
Without ``kernel`` the cached default kernel (Debian 12's, found through apt) is used, as
before; ``MLOCKAUDIT_VM_KERNEL_PACKAGE`` names a package instead.

Downloads and builds are cached in /var/cache/mlockaudit-vm (``MLOCKAUDIT_VM_CACHE``).
Needs root (apt-get, and qemu exports ``/`` with security_model=none).
Standard library only; Python 3.6+.
"""

import collections
import fcntl
import glob
import gzip
import hashlib
import http.client
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
import urllib.error
import urllib.request

CACHE_DIR = os.environ.get("MLOCKAUDIT_VM_CACHE", "/var/cache/mlockaudit-vm")
APT_PACKAGES = ("qemu-system-x86", "busybox-static", "cpio")
#: Debian 12's 6.1 order (kernels cached by older versions of this file list these). A
#: kernel's own list is worked out when it is extracted: the modules ``NEEDED_MODULES``
#: need, found through the ``depends=`` of each module's .modinfo (no modules.dep is
#: shipped), dependencies first; 5.10 has no netfs and no virtio_pci_*_dev, on 6.12 fscache
#: is part of netfs. The guest still retries the whole list a few times.
MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
           "virtio_pci", "netfs", "fscache", "9pnet", "9pnet_virtio", "9p")
#: What the guest needs, each a module or built in (its CONFIG_ option =y).
NEEDED_MODULES = collections.OrderedDict([
    ("virtio_pci", "CONFIG_VIRTIO_PCI"), ("9pnet_virtio", "CONFIG_NET_9P_VIRTIO"),
    ("9p", "CONFIG_9P_FS")])

#: The kernel matrix: line -> Debian release, its suites (the release and its security
#: updates, where kernel updates land between point releases) and the image package's
#: name; the newest Version of the matching packages in those suites is taken.
KERNEL_LINES = collections.OrderedDict([
    ("5.10", {"debian": "11", "suites": ("bullseye", "bullseye-security"),
              "package": r"^linux-image-5\.10\.0-\d+-amd64$"}),
    ("6.1", {"debian": "12", "suites": ("bookworm", "bookworm-security"),
             "package": r"^linux-image-6\.1\.0-\d+-amd64$"}),
    ("6.12", {"debian": "13", "suites": ("trixie", "trixie-security"),
              "package": r"^linux-image-6\.12\.\d+\+deb13-amd64$"}),
])
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
INDEX_MAX_AGE = 86400                  # seconds a cached Packages index is trusted for
KEYRINGS = ("/usr/share/keyrings/debian-archive-keyring.gpg",)
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
    """An extracted kernel in the cache: ``vmlinuz``, loadable ``modules`` (name -> path,
    in load order), and the ``line`` of KERNEL_LINES it belongs to (None if none)."""

    def __init__(self, directory):
        self.directory = directory
        with open(os.path.join(directory, "kernel.json")) as handle:
            meta = json.load(handle)
        self.package = meta["package"]
        self.version = meta["version"]
        self.release = meta["release"]
        self.line = meta.get("line") or line_of_package(self.package)
        self.vmlinuz = os.path.join(directory, "vmlinuz")
        self.modules = collections.OrderedDict(
            (name, os.path.join(directory, "modules", name + ".ko"))
            for name in meta["modules"])

    def __repr__(self):
        return "Kernel(%s %s)" % (self.package, self.version)


# ------------------------------------------------------------ the archive, without apt

def parse_packages(text):
    """A Debian ``Packages`` (or Release) text -> list of stanzas, each a dict of field ->
    value (a continued field's lines joined with newlines, its first line stripped)."""
    stanzas, current, last = [], {}, None
    for raw in text.splitlines():
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, last = {}, None
        elif raw[0] in " \t":
            if last is not None:
                current[last] += "\n" + raw.strip()
        elif ":" in raw:
            key, _, value = raw.partition(":")
            last = key.strip()
            current[last] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def _version_order(char):
    if char == "~":
        return -1
    if not char or char.isdigit():
        return 0
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _verrevcmp(a, b):
    """dpkg's comparison of an upstream version or a revision."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _version_order(a[i] if i < len(a) else "")
            bc = _version_order(b[j] if j < len(b) else "")
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        first_diff = 0
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def compare_versions(a, b):
    """Debian version order (``dpkg --compare-versions``): <0, 0 or >0."""
    def split(version):
        epoch, sep, rest = version.partition(":")
        if not sep:
            epoch, rest = "0", version
        upstream, sep, revision = rest.rpartition("-")
        if not sep:
            upstream, revision = rest, ""
        return int(epoch or 0), upstream, revision
    ea, ua, ra = split(a.strip())
    eb, ub, rb = split(b.strip())
    if ea != eb:
        return ea - eb
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


def line_of_package(package):
    """The KERNEL_LINES line whose image packages ``package`` is one of, or None."""
    for line, spec in KERNEL_LINES.items():
        if re.match(spec["package"], package or ""):
            return line
    return None


def newest_of_line(stanzas, line):
    """The stanza of the newest (by Version) image package of ``line`` among a Packages
    index's stanzas, or None. Only amd64 images with a Filename count (not -dbg,
    -unsigned, cloud or rt flavours: the line's pattern names the plain image)."""
    pattern = re.compile(KERNEL_LINES[line]["package"])
    best = None
    for stanza in stanzas:
        if not pattern.match(stanza.get("Package", "")) or not stanza.get("Filename") \
                or stanza.get("Architecture", "amd64") != "amd64" or "Version" not in stanza:
            continue
        if best is None or compare_versions(stanza["Version"], best["Version"]) > 0:
            best = stanza
    return best


def kernel_matrix(value=None):
    """The lines to test: MLOCKAUDIT_VM_KERNELS ("6.1", "5.10,6.1,6.12", spaces or commas),
    by default all of KERNEL_LINES, in its order. An unknown line is an error."""
    if value is None:
        value = os.environ.get("MLOCKAUDIT_VM_KERNELS", "")
    wanted = [word for word in re.split(r"[\s,]+", value) if word]
    if not wanted:
        return list(KERNEL_LINES)
    unknown = [word for word in wanted if word not in KERNEL_LINES]
    if unknown:
        raise ValueError("MLOCKAUDIT_VM_KERNELS: unknown kernel line %s (known: %s)"
                         % (", ".join(unknown), ", ".join(KERNEL_LINES)))
    return [line for line in KERNEL_LINES if line in wanted]


def parse_apt_sources(text, deb822):
    """(uri, [suites]) of each enabled ``deb`` entry of a sources.list (one-line form) or a
    .sources file (deb822)."""
    entries = []
    if deb822:
        lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        for stanza in parse_packages("\n".join(lines)):
            if stanza.get("Enabled", "yes").strip().lower() == "no":
                continue
            if "deb" not in stanza.get("Types", "").split():
                continue
            for uri in stanza.get("URIs", "").split():
                entries.append((uri, stanza.get("Suites", "").split()))
        return entries
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)        # [arch=amd64 signed-by=...]
        words = line.split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append((words[1], [words[2]]))
    return entries


def debian_mirror(security=False, apt_dir="/etc/apt"):
    """The Debian archive apt uses here: the URI of the first http(s) deb entry of the
    machine's apt sources that serves a release suite (bookworm, ...), or with
    ``security`` a security suite (bookworm-security, ...). MLOCKAUDIT_VM_MIRROR and
    MLOCKAUDIT_VM_SECURITY_MIRROR override them."""
    variable = "MLOCKAUDIT_VM_SECURITY_MIRROR" if security else "MLOCKAUDIT_VM_MIRROR"
    if os.environ.get(variable):
        return os.environ[variable].rstrip("/")
    releases = ("buster", "bullseye", "bookworm", "trixie", "forky", "sid")
    known = set(release + "-security" if security else release for release in releases)
    files = [(os.path.join(apt_dir, "sources.list"), False)]
    files += [(path, False) for path in sorted(glob.glob(os.path.join(
        apt_dir, "sources.list.d", "*.list")))]
    files += [(path, True) for path in sorted(glob.glob(os.path.join(
        apt_dir, "sources.list.d", "*.sources")))]
    for path, deb822 in files:
        try:
            with open(path) as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError):
            continue
        for uri, suites in parse_apt_sources(text, deb822):
            if uri.startswith(("http://", "https://")) and (known & set(suites)):
                return uri.rstrip("/")
    return DEFAULT_SECURITY_MIRROR if security else DEFAULT_MIRROR


def suite_mirror(suite):
    """The archive that serves ``suite`` (the security archive for SUITE-security)."""
    return debian_mirror(security=suite.endswith("-security"))


def _download(url, target, sha256=None, size=None):
    """urllib GET into ``target`` (through a partial file), retried, hash checked."""
    partial = "%s.part%d" % (target, os.getpid())
    error = None
    for attempt in range(3):
        if attempt:
            time.sleep(2 * attempt)
        try:
            digest = hashlib.sha256()
            request = urllib.request.Request(url, headers={"User-Agent": "mlockaudit-vmlib"})
            with urllib.request.urlopen(request, timeout=60) as response, \
                    open(partial, "wb") as out:
                while True:
                    block = response.read(1 << 20)
                    if not block:
                        break
                    digest.update(block)
                    out.write(block)
            got_size = os.path.getsize(partial)
            if size is not None and got_size != int(size):
                raise VMError("%s: %d bytes, the index says %s" % (url, got_size, size))
            if sha256 is not None and digest.hexdigest() != sha256.lower():
                raise VMError("%s: SHA256 %s, the index says %s"
                              % (url, digest.hexdigest(), sha256))
            os.rename(partial, target)
            return target
        except (OSError, http.client.HTTPException, VMError) as exc:  # URLError: OSError
            error = exc
            if os.path.exists(partial):
                os.unlink(partial)
            if isinstance(exc, urllib.error.HTTPError) and exc.code == 404:
                break
    raise VMError("downloading %s failed: %s" % (url, error))


def _keyring():
    for path in ([os.environ.get("MLOCKAUDIT_VM_KEYRING")] + list(KEYRINGS)):
        if path and os.path.exists(path):
            return path
    raise VMError("no Debian archive keyring (debian-archive-keyring) to check InRelease with")


def release_hashes(text, section="SHA256"):
    """A Release file's ``SHA256`` section -> {path: (sha256, size)}."""
    hashes = {}
    for stanza in parse_packages(text)[:1]:
        for line in stanza.get(section, "").splitlines():
            words = line.split()
            if len(words) == 3:
                hashes[words[2]] = (words[0], int(words[1]))
    return hashes


def suite_index(suite, refresh=False):
    """The main/binary-amd64 Packages index of ``suite`` on its archive, parsed (each stanza
    also has ``_archive``, the archive's URI), cached in CACHE_DIR/index/SUITE for a day
    (INDEX_MAX_AGE) or until ``refresh``. InRelease is verified with gpgv against Debian's
    archive keyring and the Packages file against its SHA256 there."""
    directory = os.path.join(CACHE_DIR, "index", suite)
    os.makedirs(directory, exist_ok=True)
    mirror = suite_mirror(suite)
    cached = [os.path.join(directory, name) for name in ("Packages.xz", "Packages.gz")
              if os.path.exists(os.path.join(directory, name))]
    if refresh or not cached or time.time() - os.path.getmtime(cached[0]) > INDEX_MAX_AGE:
        base = "%s/dists/%s" % (mirror, suite)
        log("reading the %s index on %s" % (suite, mirror))
        inrelease = _download(base + "/InRelease", os.path.join(directory, "InRelease.new"))
        check = subprocess.run(["gpgv", "--keyring", _keyring(), "--output", "-", inrelease],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check.returncode != 0:
            raise VMError("%s/InRelease: signature not verified: %s"
                          % (base, check.stderr.decode("utf-8", "replace").strip()))
        hashes = release_hashes(check.stdout.decode("utf-8", "replace"))
        for name in ("Packages.xz", "Packages.gz"):   # security suites have no .gz
            wanted = hashes.get("main/binary-amd64/" + name)
            if wanted is not None:
                break
        else:
            raise VMError("%s/InRelease lists no main/binary-amd64/Packages.{xz,gz}" % base)
        path = os.path.join(directory, name)
        _download("%s/main/binary-amd64/%s" % (base, name), path + ".new", *wanted)
        for old in cached:
            os.unlink(old)
        os.rename(path + ".new", path)
        os.rename(inrelease, os.path.join(directory, "InRelease"))
        cached = [path]
    opener = lzma.open if cached[0].endswith(".xz") else gzip.open
    with opener(cached[0]) as handle:
        stanzas = parse_packages(handle.read().decode("utf-8", "replace"))
    for stanza in stanzas:
        stanza["_archive"] = mirror
        stanza["_suite"] = suite
    return stanzas


def _archive_deb(stanza):
    """The .deb of an index stanza, downloaded once into CACHE_DIR/debs (SHA256 checked)."""
    debs = os.path.join(CACHE_DIR, "debs")
    os.makedirs(debs, exist_ok=True)
    target = os.path.join(debs, os.path.basename(stanza["Filename"]))
    if not os.path.exists(target):
        log("downloading %s %s from %s (%d MB)" % (
            stanza["Package"], stanza["Version"], stanza["_suite"],
            int(stanza.get("Size", 0)) >> 20))
        _download("%s/%s" % (stanza["_archive"], stanza["Filename"]), target,
                  stanza.get("SHA256"), stanza.get("Size"))
    return target


# ------------------------------------------------------------------- unpacking a kernel

def modinfo_depends(data):
    """The ``depends=`` names of a module's .modinfo (raw .ko bytes) -> list."""
    match = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    if not match:
        return []
    return [name.decode().replace("-", "_") for name in match.group(1).split(b",") if name]


def module_load_order(needed, depends_of):
    """Modules to insmod, dependencies first: ``needed`` and what they depend on.
    ``depends_of(name)`` -> list of names, or None when the kernel has no such module
    (built in). -> list of names."""
    order, seen = [], set()

    def visit(name, path):
        if name in seen:
            return
        if name in path:
            raise VMError("module dependency loop: %s" % " -> ".join(path + [name]))
        deps = depends_of(name)
        if deps is None:
            return
        for dep in deps:
            visit(dep, path + [name])
        seen.add(name)
        order.append(name)
    for name in needed:
        visit(name, [])
    return order


def _kernel_config(path):
    config = {}
    try:
        with open(path) as handle:
            for line in handle:
                key, sep, value = line.strip().partition("=")
                if sep and key.startswith("CONFIG_"):
                    config[key] = value
    except OSError:
        pass
    return config


def _download_with_apt(package):
    """apt-get download one package (the machine's own apt sources) into the cache."""
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
    return sorted(debs)[-1]


def _extract_kernel(package, target, deb=None):
    """Unpack vmlinuz and the modules the guest needs from ``deb`` (default: apt-get
    download ``package``) into ``target``."""
    if deb is None:
        deb = _download_with_apt(package)
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
        config = _kernel_config(os.path.join(scratch, "boot", "config-" + release))
        tree = {}
        for modules_dir in ("lib/modules", "usr/lib/modules"):   # Debian 13: usr/lib
            for path in glob.glob(os.path.join(scratch, modules_dir, release, "kernel", "**",
                                               "*.ko*"), recursive=True):
                base = os.path.basename(path)
                tree.setdefault(base.split(".ko", 1)[0].replace("-", "_"), path)
        staged = os.path.join(scratch, "out")
        os.makedirs(os.path.join(staged, "modules"))
        shutil.copyfile(vmlinuz[0], os.path.join(staged, "vmlinuz"))
        depends = {}

        def depends_of(name):
            if name not in tree:
                return None                # built in (or absent): nothing to load
            if name not in depends:
                plain = os.path.join(staged, "modules", name + ".ko")
                _copy_module(tree[name], plain)
                with open(plain, "rb") as handle:
                    depends[name] = modinfo_depends(handle.read())
            return depends[name]
        found = module_load_order(list(NEEDED_MODULES), depends_of)
        for name, option in NEEDED_MODULES.items():
            if name not in tree and config and config.get(option) != "y":
                raise VMError("%s: no %s module and %s is not built in (%s)"
                              % (package, name, option, config.get(option, "unset")))
        for name in depends:
            if name not in found:
                os.unlink(os.path.join(staged, "modules", name + ".ko"))
        with open(os.path.join(staged, "kernel.json"), "w") as handle:
            json.dump({"package": package, "version": version, "release": release,
                       "deb": os.path.basename(deb), "modules": found,
                       "line": line_of_package(package),
                       "builtin": [name for name in NEEDED_MODULES if name not in tree]},
                      handle, indent=1)
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


def _link(link, target):
    """Point the symlink ``link`` at ``target`` (relative to the cache), atomically."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    partial = "%s.new%d" % (link, os.getpid())
    if os.path.lexists(partial):
        os.unlink(partial)
    os.symlink(os.path.relpath(target, os.path.dirname(link)), partial)
    os.rename(partial, link)


def _line_stanzas(line, refresh=False):
    stanzas = []
    for suite in KERNEL_LINES[line]["suites"]:
        stanzas.extend(suite_index(suite, refresh=refresh))
    return stanzas


def _kernel_from_index(package=None, line=None, refresh=False):
    """Download and unpack ``package`` (or the newest image of ``line``) from its line's
    suites -> Kernel."""
    line = line or line_of_package(package)
    stanzas = _line_stanzas(line, refresh)
    where = "/".join(KERNEL_LINES[line]["suites"])
    if package is not None:
        stanzas = [stanza for stanza in stanzas if stanza.get("Package") == package]
    stanza = newest_of_line(stanzas, line)
    if stanza is None:
        if not refresh:
            return _kernel_from_index(package, line, refresh=True)
        raise VMError("the %s indexes list no %s" % (
            where, package or KERNEL_LINES[line]["package"]))
    target = os.path.join(CACHE_DIR, "kernels", stanza["Package"])
    if os.path.exists(os.path.join(target, "kernel.json")):
        kernel = Kernel(target)
        if kernel.version == stanza["Version"]:
            return kernel
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        deb = _archive_deb(stanza)
    except VMError:
        if refresh:
            raise
        return _kernel_from_index(package, line, refresh=True)   # superseded meanwhile?
    _extract_kernel(stanza["Package"], target, deb=deb)
    return Kernel(target)


def ensure_line(line, refresh=None):
    """The kernel of matrix line ``line`` ("5.10", "6.1", "6.12") -> Kernel: the newest
    image of the line the first time, then the same one (CACHE_DIR/lines/LINE) until the
    cache is cleared or ``refresh`` (default: MLOCKAUDIT_VM_REFRESH=1) looks again."""
    if line not in KERNEL_LINES:
        raise VMError("unknown kernel line %r (known: %s)" % (line, ", ".join(KERNEL_LINES)))
    if refresh is None:
        refresh = os.environ.get("MLOCKAUDIT_VM_REFRESH") == "1"
    link = os.path.join(CACHE_DIR, "lines", line)
    if not refresh and os.path.exists(os.path.join(link, "kernel.json")):
        return Kernel(os.path.realpath(link))
    current = os.path.join(CACHE_DIR, "current")
    if not refresh and os.path.exists(os.path.join(current, "kernel.json")) \
            and Kernel(current).line == line:
        kernel = Kernel(os.path.realpath(current))   # the default kernel is of this line
    else:
        kernel = _kernel_from_index(line=line, refresh=refresh)
    _link(link, kernel.directory)
    return kernel


def ensure_kernel(package=None):
    """The cached kernel (downloading and extracting it the first time) -> Kernel.

    ``package`` is a line of KERNEL_LINES ("5.10", "6.1", "6.12": see ensure_line) or a
    package name (one of a line's images comes from that line's suite, any other through
    apt). Without it (or MLOCKAUDIT_VM_KERNEL_PACKAGE) the kernel cached by an earlier
    run is reused, so the tests keep one kernel until the cache is cleared."""
    package = package or os.environ.get("MLOCKAUDIT_VM_KERNEL_PACKAGE")
    if package in KERNEL_LINES:
        return ensure_line(package)
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
    elif line_of_package(package):        # named: from its line's suite if it is there
        target = os.path.join(CACHE_DIR, "kernels", package)
        if not os.path.exists(os.path.join(target, "kernel.json")):
            try:
                _kernel_from_index(package)
            except VMError as exc:
                log("%s; trying apt" % exc)
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


def _init_text(modules=MODULES):
    return (INIT_SCRIPT.replace("@HOSTNAME@", GUEST_HOSTNAME)
            .replace("@MODULES@", " ".join(modules))
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
    init = _init_text(list(kernel.modules)).encode()
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
    """Install what the host needs, fetch the kernel (``package``: a line of KERNEL_LINES,
    a package name, or None for the default: see ensure_kernel), build the initramfs
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
              memory_mb=2048, cpus=2, check=False, kernel=None):
    """Boot the guest, run ``command`` (a shell string, or an argv list) as root in the
    host's root filesystem (read-only) and power off -> VMResult.

    ``kernel_params`` is appended to the kernel command line (``lockdown=integrity
    audit=1``). ``exchange_dir``: a host directory shared read-write with the guest at
    ``$MLOCKAUDIT_VM_EXCHANGE`` (default: a temporary one, removed afterwards). ``cwd``:
    the guest directory to run in (default: the host's current directory). ``env``: extra
    environment variables. ``kernel``: which kernel (a line of KERNEL_LINES such as
    "5.10", a package name; default: the cached default kernel). Raises VMError (with the last console lines) when the guest does
    not get the command to completion within ``timeout`` seconds; with ``check``, also when
    the command exits non-zero."""
    started = time.monotonic()
    kernel, initramfs = prepare(kernel)
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
    """``python3 vmlib.py prepare [LINE|PACKAGE...]``: install, download and build, print
    what is cached (``all``: every line of KERNEL_LINES)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "prepare":
        sys.exit("usage: vmlib.py prepare [all|%s|PACKAGE...]   (use scripts/vm-test to "
                 "run commands)" % "|".join(KERNEL_LINES))
    wanted = argv[1:] or [None]
    if wanted == ["all"]:
        wanted = list(KERNEL_LINES)
    for which in wanted:
        _print_prepared(*prepare(which))


def _print_prepared(kernel, initramfs):
    print("kernel %s %s (%s)\n  %s\n  modules: %s\ninitramfs %s" % (
        kernel.package, kernel.version, kernel.release, kernel.vmlinuz,
        " ".join(kernel.modules), initramfs))


if __name__ == "__main__":
    main()
