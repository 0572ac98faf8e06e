"""The tracefs objects mlockaudit creates: a private ftrace instance and the events enabled
in it. Each object here knows how to create itself, find stale copies, and remove itself.

Rules this module keeps (a tracer on a production host must not disturb others):

* never touch the global buffer, ``current_tracer``, other instances or other probes;
* work in ``instances/mlockaudit_<pid>_<starttime>``, so a stale instance can be told
  from a live one even after the pid was reused;
* remove in the order the kernel requires: disable the events, close ``trace_pipe``,
  then ``rmdir`` (the kernel answers EBUSY while a file of the instance is open or an
  event is still enabled).
"""

import errno
import os
import re
import time

from .. import procfs
from ..compat import CLOCK_BOOTTIME, CLOCK_MONOTONIC, clock_gettime_ns, time_ns

INSTANCE_PREFIX = "mlockaudit_"
_INSTANCE_NAME = re.compile(r"\Amlockaudit_(\d+)_(\d+)\Z")

# trace_clock choices, best first, with the POSIX clock each one follows.
# "global" (3.10's cross-CPU clock) before "local": the per-CPU buffers are merged by time,
# and "local" (sched_clock per CPU) need not agree between CPUs.
_CLOCKS = (("boot", CLOCK_BOOTTIME), ("mono", CLOCK_MONOTONIC), ("global", CLOCK_MONOTONIC),
           ("local", CLOCK_MONOTONIC))


class TracefsError(OSError):
    """tracefs is missing or refused an operation; the message says what to do. An
    OSError, like the audit backend's AuditError, so ``start`` reports it as a message
    (``TracefsError(errno, message)``, or just a message: EIO)."""

    def __init__(self, *args):
        if len(args) == 1:
            args = (errno.EIO, args[0])
        OSError.__init__(self, *args)

    def __str__(self):
        return self.strerror or OSError.__str__(self)


def _write(path, value):
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, value.encode() if isinstance(value, str) else value)
    finally:
        os.close(fd)


def _read(path):
    with open(path, "rb") as handle:
        return handle.read().decode("ascii", "replace")


def instance_name(pid=None):
    pid = os.getpid() if pid is None else pid
    return "%s%d_%d" % (INSTANCE_PREFIX, pid, procfs.start_time(pid) or 0)


def owner_alive(name):
    """True while the process that created instance ``name`` still runs.

    Names that do not follow our pattern are not ours: they are reported as alive so that
    nothing ever removes them."""
    match = _INSTANCE_NAME.match(name)
    if match is None:
        return True
    return procfs.process_alive(int(match.group(1)), int(match.group(2)))


class Instance(object):
    """One private ftrace instance."""

    def __init__(self, root, name):
        self.root = root
        self.name = name
        self.path = os.path.join(root, "instances", name)
        self.pipe_fd = None
        self.raw_fds = {}
        self.clock = None
        self.clock_offset_ns = None

    @classmethod
    def create(cls, root, name=None):
        instance = cls(root, name or instance_name())
        try:
            os.mkdir(instance.path)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise TracefsError("tracefs instance %s already exists" % instance.path)
            raise TracefsError("cannot create tracefs instance %s: %s (instances need "
                               "kernel 3.10+ and tracefs mounted read-write)"
                               % (instance.path, exc.strerror))
        return instance

    def file(self, relative):
        return os.path.join(self.path, relative)

    def write(self, relative, value):
        _write(self.file(relative), value)

    def read(self, relative):
        return _read(self.file(relative))

    def set_option(self, option, on=True):
        """``options/<name>`` in this instance; False when the kernel lacks the option."""
        path = self.file("options/" + option)
        if not os.path.exists(path):
            return False
        _write(path, "1" if on else "0")
        return True

    def set_buffer_kb(self, kilobytes):
        self.write("buffer_size_kb", str(int(kilobytes)))

    def choose_clock(self):
        """Select the best trace clock and measure its offset to the epoch, in ns.

        ``boot`` (CLOCK_BOOTTIME, 4.10+) keeps counting across suspend; ``mono``
        (CLOCK_MONOTONIC) is next; ``local`` (sched_clock, the default and the only choice
        on very old kernels) is close to CLOCK_MONOTONIC but may drift by microseconds."""
        available = self.read("trace_clock")
        for clock_name, clock_id in _CLOCKS:
            if re.search(r"(^|[\s\[])%s($|[\s\]])" % clock_name, available):
                if "[%s]" % clock_name not in available:
                    self.write("trace_clock", clock_name)
                self.clock = clock_name
                self.clock_offset_ns = clock_offset_ns(clock_id)
                return clock_name
        return None

    def enable_event(self, system, event, on=True):
        self.write("events/%s/%s/enable" % (system, event), "1" if on else "0")

    def disable_all_events(self):
        """``events/enable`` in an instance switches off every event of this instance only."""
        try:
            self.write("events/enable", "0")
        except OSError:
            pass

    def open_raw(self):
        """Open every CPU's ``per_cpu/cpuN/trace_pipe_raw`` non-blocking -> {cpu: fd}.
        Each read returns one ring-buffer page (reads consume it)."""
        fds = {}
        try:
            for name in sorted(os.listdir(self.file("per_cpu"))):
                if name.startswith("cpu") and name[3:].isdigit():
                    fds[int(name[3:])] = os.open(self.file("per_cpu/%s/trace_pipe_raw" % name),
                                                 os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            for fd in fds.values():
                os.close(fd)
            raise
        self.raw_fds = fds
        return fds

    def close_raw(self):
        for fd in getattr(self, "raw_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.raw_fds = {}

    def open_pipe(self):
        """Open ``trace_pipe`` non-blocking (poll it; reads consume the buffer)."""
        self.pipe_fd = os.open(self.file("trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
        return self.pipe_fd

    def close_pipe(self):
        if self.pipe_fd is not None:
            try:
                os.close(self.pipe_fd)
            finally:
                self.pipe_fd = None

    def cpu_stats(self):
        """{cpu: {"overrun": n, "dropped events": n, ...}} from per_cpu/cpuN/stats."""
        stats = {}
        per_cpu = self.file("per_cpu")
        try:
            cpus = os.listdir(per_cpu)
        except OSError:
            return stats
        for cpu in cpus:
            if not cpu.startswith("cpu"):
                continue
            values = {}
            try:
                text = _read(os.path.join(per_cpu, cpu, "stats"))
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(":")
                value = value.strip()
                if value.isdigit():
                    values[key.strip()] = int(value)
            stats[int(cpu[3:])] = values
        return stats

    def remove(self, attempts=50):
        """Disable, close, rmdir. Safe to call twice; raises TracefsError if it stays."""
        if not os.path.isdir(self.path):
            self.close_pipe()
            self.close_raw()
            return
        self.disable_all_events()
        self.close_pipe()
        self.close_raw()
        remove_instance_dir(self.path, attempts)


def remove_instance_dir(path, attempts=50):
    """rmdir an instance, retrying while the kernel still reports it busy."""
    for attempt in range(attempts):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or attempt == attempts - 1:
                raise TracefsError("cannot remove tracefs instance %s: %s" % (path, exc.strerror))
            try:
                _write(os.path.join(path, "events/enable"), "0")
            except OSError:
                pass
            time.sleep(0.05)


def clock_offset_ns(clock_id, samples=7):
    """epoch ns minus clock ns, from the tightest of a few back-to-back readings."""
    best = None
    for _ in range(samples):
        before = time_ns()
        clock = clock_gettime_ns(clock_id)
        after = time_ns()
        if best is None or after - before < best[0]:
            best = (after - before, (before + after) // 2 - clock)
    return best[1]


def stale_instances(root):
    """Names of our instances whose creating process is gone."""
    try:
        names = os.listdir(os.path.join(root, "instances"))
    except OSError:
        return []
    return [name for name in names
            if name.startswith(INSTANCE_PREFIX) and not owner_alive(name)]


def stale_probes(root):
    """``GROUP/EVENT`` of kprobes in groups named after a dead mlockaudit process."""
    try:
        with open(os.path.join(root, "kprobe_events")) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    stale = []
    for line in lines:
        head = line.split(None, 1)[0] if line.strip() else ""
        _, _, name = head.partition(":")
        group, _, event = name.partition("/")
        if group.startswith(INSTANCE_PREFIX) and not owner_alive(group):
            stale.append("%s/%s" % (group, event))
    return stale
