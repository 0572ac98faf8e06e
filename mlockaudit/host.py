"""Facts about this host, in one place: kernel release and version, machine and arch,
lockdown mode, kallsyms, mounts (tracefs, securityfs, cgroup2), the kernel's word size, the
boot time. Pure parsers over bytes/text plus thin readers, so that doctor, the backends and
the tests (fed recorded answers) read the host the same way.

Reading never changes the host, with one documented exception: securityfs is mounted for
the moment it takes to read the lockdown mode when nothing is mounted there, then
unmounted (doctor and start both need the mode; it is not visible otherwise).
"""

import os
import re
import subprocess

from . import compat
from .syscalls import host_arch

SECURITYFS = "/sys/kernel/security"
TRACEFS_PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


# -- kernel -----------------------------------------------------------------------------

def kernel_release():
    return os.uname().release


def version_of(release):
    """``3.10.0-1160.el7.x86_64`` -> (3, 10); (0, 0) when unreadable."""
    numbers = re.findall(r"\d+", release or "")[:2]
    return tuple(int(n) for n in numbers) if len(numbers) == 2 else (0, 0)


def kernel_version(release=None):
    return version_of(release if release is not None else kernel_release())


def machine():
    return os.uname().machine


def native_arch():
    """Our arch name for this machine (x86_64, aarch64, i386, arm), or None."""
    return host_arch(machine())


# -- lockdown -----------------------------------------------------------------------------

def parse_lockdown(text):
    """``none [integrity] confidentiality`` -> "integrity"; None when unreadable."""
    match = re.search(r"\[(\w+)\]", text or "")
    return match.group(1) if match else None


def lockdown_mode():
    """'none', 'integrity', 'confidentiality', or None when the LSM is absent/unreadable."""
    path = os.path.join(SECURITYFS, "lockdown")
    mounted_here = False
    if not os.path.exists(path) and os.path.isdir(SECURITYFS) and os.geteuid() == 0 \
            and not os.listdir(SECURITYFS):
        mounted_here = mount("securityfs", SECURITYFS)
    try:
        with open(path) as handle:
            return parse_lockdown(handle.read())
    except OSError:
        return None
    finally:
        if mounted_here:
            unmount(SECURITYFS)


# -- mounts -------------------------------------------------------------------------------

def mount(fstype, path):
    """``mount -t FSTYPE nodev PATH``; True when it worked (root only)."""
    result = subprocess.run(["mount", "-t", fstype, "nodev", path], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return result.returncode == 0


def unmount(path):
    result = subprocess.run(["umount", path], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return result.returncode == 0


def parse_mounts(text):
    """/proc/mounts -> [(device, mount point, fstype)] (octal escapes decoded)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1])
            out.append((parts[0], point, parts[2]))
    return out


def mounts():
    try:
        with open("/proc/mounts") as handle:
            return parse_mounts(handle.read())
    except OSError:
        return []


def cgroup2_root():
    """Where the unified (v2) cgroup hierarchy is mounted, or None (v1-only hosts)."""
    for _device, point, fstype in mounts():
        if fstype == "cgroup2":
            return point
    return None


def find_tracefs():
    """The tracefs root that has an ``events`` folder, or None (not mounted)."""
    for path in TRACEFS_PATHS:
        if os.path.isdir(os.path.join(path, "events")):
            return path
    return None


# -- kallsyms -------------------------------------------------------------------------------

def parse_kallsyms(lines, wanted=b"sys_"):
    """/proc/kallsyms lines -> {name: address bytes} for symbols holding ``wanted``."""
    symbols = {}
    for line in lines:
        if wanted not in line:
            continue
        fields = line.split()
        if len(fields) >= 3:
            symbols[fields[2].decode("ascii", "replace")] = fields[0]
    return symbols


def kallsyms(wanted=b"sys_", path="/proc/kallsyms"):
    """{name: address} of the running kernel's symbols holding ``wanted``; None when
    kallsyms cannot be read. (Addresses are zeros under kptr_restrict.)"""
    try:
        with open(path, "rb") as handle:
            return parse_kallsyms(handle, wanted) or None
    except OSError:
        return None


# -- the kernel's word size and clocks ------------------------------------------------------

_COMMIT_FIELD = re.compile(r"field: local_t commit;\s*offset:\d+;\s*size:(\d+);")


def long_bits_from_header_page(text):
    """``events/header_page`` -> the kernel's ``long`` width in bits (64 or 32), or None:
    the page header's ``commit`` is a local_t (a long), whatever the reader's own width."""
    match = _COMMIT_FIELD.search(text or "")
    if match is None or match.group(1) not in ("4", "8"):
        return None
    return int(match.group(1)) * 8


def boot_epoch_ns(samples=7):
    """Epoch ns of the moment CLOCK_BOOTTIME was 0 (boot), from the tightest of a few
    back-to-back readings: boot-clock times + this = wall time."""
    best = None
    for _ in range(samples):
        before = compat.time_ns()
        boot = compat.clock_gettime_ns(compat.CLOCK_BOOTTIME)
        after = compat.time_ns()
        if best is None or after - before < best[0]:
            best = (after - before, (before + after) // 2 - boot)
    return best[1]
