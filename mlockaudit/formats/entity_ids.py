"""Tracee's entity ids (``threadEntityId``, ``processEntityId``, ``parentEntityId``): a
32-bit hash of a task's id and start time that names one task for its whole life, so a
consumer can join our events with Tracee's own (its process tree and signatures key tasks
by it) and tell a reused pid from the task that had it before.

Tracee v0.24.1 computes it in ``pkg/datastores/process/taskid.go`` (``HashTaskID``): the
start time, epoch ns, is floored to a multiple of 0.1 s (so that a start time read from
/proc in clock ticks and one from the kernel in ns give the same id), then MurmurHash3
x86 32-bit with seed 0x18273645 runs over the 12 bytes of the task id as a big-endian u32
followed by that time as a big-endian u64 (``common/murmur``). Its blocks are read in the
CPU's byte order; Tracee runs on x86_64 and arm64, both little-endian, which is what
MurmurHash3 itself specifies and what :func:`murmur3_32` does.
"""

import struct

SEED = 0x18273645
#: Tracee floors start times to this many ns before hashing: (1e9 / USER_HZ) * 10.
START_TIME_ROUNDING_NS = 100000000

_C1, _C2, _M32 = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
_KEY = struct.Struct(">IQ")


def murmur3_32(data, seed=SEED):
    """MurmurHash3 x86 32-bit of ``data`` (bytes), little-endian blocks."""
    h1 = seed
    length = len(data)
    nblocks = length // 4
    for (k1,) in struct.iter_unpack("<I", data[:nblocks * 4]):
        k1 = (k1 * _C1) & _M32
        k1 = ((k1 << 15) | (k1 >> 17)) & _M32
        k1 = (k1 * _C2) & _M32
        h1 ^= k1
        h1 = ((h1 << 13) | (h1 >> 19)) & _M32
        h1 = (h1 * 5 + 0xE6546B64) & _M32
    tail = data[nblocks * 4:]
    if tail:
        k1 = 0
        for position in range(len(tail) - 1, -1, -1):
            k1 ^= tail[position] << (8 * position)
        k1 = (k1 * _C1) & _M32
        k1 = ((k1 << 15) | (k1 >> 17)) & _M32
        k1 = (k1 * _C2) & _M32
        h1 ^= k1
    return _finish(h1, length)


def _finish(h1, length):
    h1 ^= length
    h1 ^= h1 >> 16
    h1 = (h1 * 0x85EBCA6B) & _M32
    h1 ^= h1 >> 13
    h1 = (h1 * 0xC2B2AE35) & _M32
    h1 ^= h1 >> 16
    return h1


def entity_id(task_id, start_ns):
    """Tracee's id of the task ``task_id`` (host tid or tgid) that started at ``start_ns``
    (epoch ns); None when either is unknown (or out of the range Tracee hashes)."""
    if task_id is None or start_ns is None or not 0 <= task_id <= _M32 \
            or not 0 <= start_ns < 1 << 64:
        return None
    rounded = start_ns - start_ns % START_TIME_ROUNDING_NS
    return murmur3_32(_KEY.pack(task_id, rounded))
