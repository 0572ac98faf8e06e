#!/usr/bin/env python3
"""The workloads of mlockaudit's detections (detections.toml, rules/sigma): each does what
one detection is about, or what it must stay quiet about, and prints its truth as JSON.

    siem-workload.py raise-then-lock    raise RLIMIT_MEMLOCK (setrlimit: glibc makes it
                                        prlimit64), then mlock 2 MiB     -> memlock-raise-then-lock
    siem-workload.py mlockall-future    mlockall(MCL_CURRENT|MCL_FUTURE), munlockall
                                                                         -> mlockall-future
    siem-workload.py mlockall-current   mlockall(MCL_CURRENT), munlockall -> nothing
    siem-workload.py key-store          mlock 32 KiB once, munlock (a key store) -> nothing
    siem-workload.py large-lock UID     (root) become UID keeping CAP_IPC_LOCK, mlock 128 MiB
                                                                         -> large-lock
    siem-workload.py root-large-lock    mlock 128 MiB as root            -> not large-lock

Truth: {"workload", "pid", "uid", "calls": [{"name", "ret"}]}, printed before the process
lingers for LINGER_SECONDS. Only the standard library
(ctypes): it runs wherever the tracer runs.
"""

import ctypes
import json
import mmap
import os
import resource
import sys
import time

NR = {"x86_64": {"mlock": 149, "munlock": 150, "mlockall": 151, "munlockall": 152},
      "aarch64": {"mlock": 228, "munlock": 229, "mlockall": 230, "munlockall": 231}}[
    os.uname().machine]
MCL_CURRENT, MCL_FUTURE = 1, 2
MIB = 1 << 20
LINGER_SECONDS = 1.0

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
calls = []


def syscall(name, *args):
    ret = libc.syscall(ctypes.c_long(NR[name]), *[ctypes.c_ulong(a) for a in args])
    calls.append({"name": name, "ret": -ctypes.get_errno() if ret < 0 else ret})
    return ret


def buffer(size):
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    address = ctypes.addressof(ctypes.c_char.from_buffer(area))
    return area, address


def lock(size):
    area, address = buffer(size)
    syscall("mlock", address, size)
    syscall("munlock", address, size)
    return area


def raise_limit(size):
    """RLIMIT_MEMLOCK to ``size``, or to the hard limit where this root cannot raise the
    hard limit (no CAP_SYS_RESOURCE, e.g. in a container): a change of the limit either
    way, which is what the detection looks for."""
    _, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (size, size))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (min(size, hard), hard))
    calls.append({"name": "setrlimit", "ret": 0})      # (prlimit64 for glibc >= 2.13)


CAP_IPC_LOCK = 14
CAPSET = {"x86_64": 126, "aarch64": 91}[os.uname().machine]
PR_SET_KEEPCAPS = 8


def become_keeping_ipc_lock(uid):
    """setuid(uid) keeping CAP_IPC_LOCK, which lets a process lock beyond RLIMIT_MEMLOCK
    (how a non-root service is allowed to lock large buffers: systemd's
    AmbientCapabilities=CAP_IPC_LOCK does the same)."""
    libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgid(uid)
    os.setuid(uid)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)              # _LINUX_CAPABILITY_VERSION_3
    data = (ctypes.c_uint32 * 6)(1 << CAP_IPC_LOCK, 1 << CAP_IPC_LOCK, 0, 0, 0, 0)
    if libc.syscall(ctypes.c_long(CAPSET), header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def main(argv):
    workload = argv[1]
    if workload == "raise-then-lock":
        raise_limit(64 * MIB)
        lock(2 * MIB)
    elif workload == "mlockall-future":
        syscall("mlockall", MCL_CURRENT | MCL_FUTURE)
        syscall("munlockall")
    elif workload == "mlockall-current":
        syscall("mlockall", MCL_CURRENT)
        syscall("munlockall")
    elif workload == "key-store":
        lock(32 * 1024)
    elif workload == "large-lock":
        become_keeping_ipc_lock(int(argv[2]))
        lock(128 * MIB)
    elif workload == "root-large-lock":
        lock(128 * MIB)
    else:
        sys.exit("unknown workload %s" % workload)
    print(json.dumps({"workload": workload, "pid": os.getpid(), "uid": os.getuid(),
                      "calls": calls}))
    sys.stdout.flush()
    # stay a moment: the tracefs backend learns uid and exe from /proc while the process
    # lives, and large-lock needs the uid
    time.sleep(LINGER_SECONDS)


if __name__ == "__main__":
    main(sys.argv)
