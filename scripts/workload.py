#!/usr/bin/env python3
"""Workload for tests, captures and benchmarks: calls every syscall of the mlock family
under a comm of our choosing and writes down exactly what it did (the ground truth).

    workload.py [--comm-hex HEX] [--thread] [--storm N] [--surface] [--truth FILE]
                [--wait-fd FD]

The comm is set with prctl(PR_SET_NAME), which takes any byte but NUL, so hostile names
(spaces, dashes, digits, brackets, quotes, newlines, invalid UTF-8) are real. The truth is
JSON: {"pid", "comm_hex", "calls": [{"name", "tid", "args", "ret"}]} with args as raw
unsigned values in Tracee's order and ret as the kernel's return (negative errno).

``--storm N`` calls mlock2 N times on one page (success) and records only the count.
``--surface`` makes each locking call of the rest of the surface once (mmap MAP_LOCKED,
shmctl SHM_LOCK/SHM_UNLOCK and one that fails, setrlimit and prlimit64 of RLIMIT_MEMLOCK
with a new limit) in ``calls``, and each look-alike once (plain mmap, shmctl IPC_STAT and
IPC_RMID, setrlimit RLIMIT_NOFILE, prlimit64 RLIMIT_MEMLOCK read-only, glibc's
getrlimit) in ``look_alikes``, same shape; limits are set to what they already are.
Only the standard library: it runs on any host the tracer runs on, even under qemu.
"""

import argparse
import ctypes
import json
import mmap
import os
import sys
import threading

NR = {  # x86_64 / aarch64; the tracer's table covers the rest
    "x86_64": {"mlock": 149, "munlock": 150, "mlockall": 151, "munlockall": 152, "mlock2": 325,
               "mmap": 9, "munmap": 11, "shmget": 29, "shmctl": 31, "setrlimit": 160,
               "prlimit64": 302},
    "aarch64": {"mlock": 228, "munlock": 229, "mlockall": 230, "munlockall": 231, "mlock2": 284,
                "mmap": 222, "munmap": 215, "shmget": 194, "shmctl": 195, "setrlimit": 164,
                "prlimit64": 261},
}[os.uname().machine]
U64 = 2 ** 64 - 1

#: comms a hostile process may choose (at most 15 bytes, any byte but NUL): each one aims at
#: a way a naive parser splits a trace line or an audit record.
HOSTILE_COMMS = (
    b"plain",
    b"a b-9 [1] (x)",            # spaces, dash, digits, brackets, parentheses
    b"evil\nil-1 [000]",         # newline: one trace record over two lines + forged context
    b"x-1 (1) [000] .",          # a fake pid/tgid/cpu context inside the comm
    b"123456789012345",          # 15 digits, the longest comm
    b"1234-56789 [00]",          # digits and a dash where the pid column would be
    b"sys_mlock2(",              # looks like the start of a tracepoint event
    b"-",
    b"<...>",                    # what ftrace prints when it does not know the comm
    b'a"b\\c=d|e]',               # quote, backslash, equals, pipe, bracket
    b"\xff\xfe\x80bin",           # not UTF-8
    b"\n\n",                     # only newlines
    b"trail ",
    b"type=SYSCALL ms",          # an audit record header
    b'comm="x" pid=1',           # audit fields
    b"\t\r\x1b[31m",             # control bytes, an ANSI escape
)

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
PR_SET_NAME = 15
_GETTID = {"x86_64": 186, "aarch64": 178}[os.uname().machine]


def gettid():
    """The calling thread's kernel id (threading.get_native_id is Python 3.8+)."""
    return libc.syscall(ctypes.c_long(_GETTID))


def raw_syscall(name, *args):
    """Call by number (glibc has no mlock2 wrapper before 2.27) -> kernel return value."""
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(NR[name]), *[ctypes.c_ulong(a) for a in args])
    if result == -1:
        return -ctypes.get_errno()
    return result


def set_comm(comm):
    buf = ctypes.create_string_buffer(comm[:15], 16)
    if libc.prctl(PR_SET_NAME, buf, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")


def family_calls(addr, log):
    """Every call of the family, successes and failures, in a fixed order."""
    def call(name, *args):
        log.append({"name": name, "tid": gettid(), "args": list(args),
                    "ret": raw_syscall(name, *args)})

    call("mlock2", addr, 8192, 1)            # MLOCK_ONFAULT: success
    call("mlock2", addr, 8192, 99)           # unknown flags: -EINVAL
    call("munlock", addr, 8192)
    call("mlock", addr, 4096)
    call("munlock", addr, 4096)
    call("mlockall", 1 | 2)                  # MCL_CURRENT|MCL_FUTURE
    call("munlockall")
    call("mlockall", 0)                      # no flags: -EINVAL
    call("mlock", 0, 4096)                   # unmapped: -ENOMEM


def surface_calls(log, look_alikes):
    """Each locking call of the surface beyond the family, and each look-alike, once."""
    def call(target, name, *args):
        args = [a & U64 for a in args]            # raw register values, as the kernel sees
        ret = raw_syscall(name, *args)
        target.append({"name": name, "tid": gettid(), "args": args, "ret": ret})
        return ret
    prot, private_anon, locked = 0x3, 0x22, 0x2000
    addr = call(log, "mmap", 0, 8192, prot, private_anon | locked, -1, 0)
    raw_syscall("munmap", addr, 8192)
    addr = call(look_alikes, "mmap", 0, 8192, prot, private_anon, -1, 0)
    raw_syscall("munmap", addr, 8192)
    shmid = raw_syscall("shmget", 0, 8192, 0o1000 | 0o600)     # IPC_PRIVATE, IPC_CREAT
    stat = ctypes.create_string_buffer(512)
    call(log, "shmctl", shmid, 11, 0)                          # SHM_LOCK
    call(look_alikes, "shmctl", shmid, 2, ctypes.addressof(stat))   # IPC_STAT
    call(log, "shmctl", shmid, 12, 0)                          # SHM_UNLOCK
    call(log, "shmctl", 0x7FFFFFFF, 11, 0)                     # no such segment: -EINVAL
    call(look_alikes, "shmctl", shmid, 0, 0)                   # IPC_RMID
    limit = (ctypes.c_uint64 * 2)()
    nofile = (ctypes.c_uint64 * 2)()
    call(look_alikes, "prlimit64", 0, 8, 0, ctypes.addressof(limit))     # a read
    raw_syscall("prlimit64", 0, 7, 0, ctypes.addressof(nofile))
    call(log, "setrlimit", 8, ctypes.addressof(limit))         # RLIMIT_MEMLOCK, unchanged
    call(look_alikes, "setrlimit", 7, ctypes.addressof(nofile))          # RLIMIT_NOFILE
    call(log, "prlimit64", 0, 8, ctypes.addressof(limit), 0)   # new limit, no old
    call(log, "prlimit64", os.getpid(), 8, ctypes.addressof(limit), ctypes.addressof(limit))
    libc.getrlimit(8, ctypes.addressof(limit))                 # glibc: prlimit64(0, 8, NULL, &old)
    look_alikes.append({"name": "getrlimit (libc)", "tid": gettid(), "args": [8], "ret": 0})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comm-hex", default="", help="comm to set, as hex bytes")
    parser.add_argument("--thread", action="store_true", help="also call from a 2nd thread")
    parser.add_argument("--storm", type=int, default=0, help="N mlock2 calls instead")
    parser.add_argument("--surface", action="store_true",
                        help="the surface's locking calls and look-alikes instead")
    parser.add_argument("--truth", help="write the ground truth JSON here")
    parser.add_argument("--wait-fd", type=int, help="read one byte from this fd first")
    opts = parser.parse_args()

    if opts.wait_fd is not None:
        os.read(opts.wait_fd, 1)
    comm = bytes.fromhex(opts.comm_hex) if opts.comm_hex else None
    if comm:
        set_comm(comm)
    page = mmap.mmap(-1, 8192)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    log = []
    if opts.storm:
        syscall, number = libc.syscall, ctypes.c_long(NR["mlock2"])
        a, n, f = ctypes.c_ulong(addr), ctypes.c_ulong(4096), ctypes.c_ulong(0)
        failures = sum(1 for _ in range(opts.storm) if syscall(number, a, n, f) != 0)
        truth = {"pid": os.getpid(), "comm_hex": (comm or b"").hex(), "storm": opts.storm,
                 "failures": failures, "addr": addr}
    elif opts.surface:
        look_alikes = []
        surface_calls(log, look_alikes)
        truth = {"pid": os.getpid(), "comm_hex": (comm or b"").hex(), "calls": log,
                 "look_alikes": look_alikes}
    else:
        family_calls(addr, log)
        if opts.thread:
            worker = threading.Thread(target=family_calls, args=(addr, log))
            worker.start()
            worker.join()
        truth = {"pid": os.getpid(), "comm_hex": (comm or b"").hex(), "calls": log}
    if opts.truth:
        with open(opts.truth, "w") as handle:
            json.dump(truth, handle)
    else:
        json.dump(truth, sys.stdout)
        sys.stdout.write("\n")


if __name__ == "__main__":
    main()
