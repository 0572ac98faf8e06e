#!/usr/bin/env python3
"""The workloads of mlockaudit's detections (detections.toml, rules/sigma): each does what
one detection is about, or what it must stay quiet about, and prints its truth as JSON.

    siem-workload.py raise-then-lock    raise RLIMIT_MEMLOCK (setrlimit: glibc makes it
                                        prlimit64), then mlock 2 MiB     -> memlock-raise-then-lock
    siem-workload.py mlockall-future    mlockall(MCL_CURRENT|MCL_FUTURE), munlockall
                                                                         -> mlockall-future
    siem-workload.py mlockall-current   mlockall(MCL_CURRENT), munlockall -> nothing
    siem-workload.py key-store          mlock 32 KiB once, munlock (a key store) -> nothing
    siem-workload.py large-lock UID     (root) raise the limit, become UID, mlock 128 MiB
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
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (size, size))
    calls.append({"name": "setrlimit", "ret": 0})      # (prlimit64 for glibc >= 2.13)


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
        raise_limit(256 * MIB)
        os.setgid(int(argv[2]))
        os.setuid(int(argv[2]))
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
