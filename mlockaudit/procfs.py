"""Small, careful readers of /proc (in the spirit of psutil's Linux module): every read may
race with the process exiting, so each returns None instead of raising when it is gone."""

import os


def read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None


def start_time(pid):
    """Field 22 of /proc/PID/stat (clock ticks since boot): with the pid, a unique id of a
    process, since a pid may be reused but not at the same start time.

    The comm in field 2 may contain spaces and ')' so the fields are counted from the last
    ')' (as psutil does)."""
    data = read_bytes("/proc/%d/stat" % pid)
    if data is None:
        return None
    try:
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def process_alive(pid, expected_start=None):
    """True when pid is a running process (and, if given, started at ``expected_start``).

    A zombie (state Z: exited, not yet reaped by its parent) is dead: it holds no file,
    lock, socket or ftrace instance any more."""
    if pid <= 0:
        return False
    data = read_bytes("/proc/%d/stat" % pid)
    if data is None:
        return False
    try:
        fields = data[data.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X"):
            return False
        started = int(fields[19])
    except (ValueError, IndexError):
        return False
    return expected_start is None or started == expected_start


def self_start_time():
    return start_time(os.getpid())
