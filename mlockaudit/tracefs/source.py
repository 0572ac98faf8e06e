"""The live tracefs backend: a private ftrace instance with the family's syscall
tracepoints (or kprobes where those are missing), trace_pipe read in large chunks, entry
and exit paired per thread, the process filled in from /proc.

Lifecycle (everything recorded in the session state before it is made, see cleanup.py):
mount tracefs if needed, mkdir the instance, add our kprobe group (kprobe mode), enable
our events in the instance only, open trace_pipe. Stop undoes it in the order the kernel
requires: disable, drain, close, remove the probes, rmdir, unmount what we mounted.

Loss: the ring buffer never makes the caller wait; under a storm it overwrites the
oldest events. The per-CPU ``overrun`` and ``dropped events`` counters (delta since
start) and the inline ``CPU:N [LOST M EVENTS]`` lines are counted; a call whose entry or
exit was overwritten is still reported, marked incomplete.
"""

import errno
import os

from .. import loop
from ..compat import CLOCK_BOOTTIME, CLOCK_MONOTONIC, clock_gettime_ns
from ..enrich import ProcEnricher
from ..syscalls import FAMILY, host_arch
from . import instance as tracefs
from . import probes as kprobes
from .lines import LineParser
from .pairing import Pairer

#: Per-CPU ring buffer, in KB, from scripts/bench-tracefs-loss on this machine (a Python
#: process calling mlock2 300,000 times as fast as it can, ~440k calls/s, medians of 3):
#: the kernel's 1408 KB kept 72% of the calls complete, 4096 KB 78%, 8192 KB 91%,
#: 16384 KB 100%. The total cap keeps a many-CPU host from pinning too much memory
#: (a storm from one thread fills one CPU's buffer). --buffer-kb overrides.
DEFAULT_BUFFER_KB = 16384
TOTAL_BUFFER_CAP_KB = 128 * 1024
READ_CHUNK = 1 << 20


class TracefsError(tracefs.TracefsError, OSError):
    """Setup cannot go on; the message says why. Also an OSError, like the audit backend's
    AuditError, so that ``start`` reports it as its message instead of a traceback (the
    CLI catches OSError; under lockdown=confidentiality ``--backend tracefs`` showed one)."""


def default_buffer_kb(cpus=None):
    cpus = cpus or os.cpu_count() or 1
    return max(1408, min(DEFAULT_BUFFER_KB, TOTAL_BUFFER_CAP_KB // cpus))


def _clock_id(name):
    return {"boot": CLOCK_BOOTTIME}.get(name, CLOCK_MONOTONIC)


class TracefsBackend(object):
    """``start --backend tracefs``: setup(), run(should_stop), stop(), stats()."""

    name = "tracefs"

    def __init__(self, emit, session, events=None, hostname=None, log=None, probe="auto",
                 buffer_kb=None):
        self.emit = emit
        self.session = session
        self.section = session.section("tracefs") if session is not None else {}
        self.events = list(events) if events else list(FAMILY)
        self.hostname = hostname
        self.log = log or (lambda message: None)
        self.probe_mode = probe
        self.buffer_kb = buffer_kb or default_buffer_kb()
        self.root = None
        self.instance = None
        self.probes = []
        self.parser = LineParser()
        self.pairer = None
        self.enricher = None
        self._partial = b""
        self._overrun_at_start = {}
        self.overrun = 0
        self.bytes_read = 0
        self.mode = None

    def _commit(self):
        if self.session is not None:
            self.session.commit()

    # -- setup ------------------------------------------------------------------------

    def setup(self):
        from ..doctor import lockdown_mode
        if lockdown_mode() == "confidentiality":
            raise TracefsError("lockdown=confidentiality: tracefs and kprobes are closed; "
                               "use --backend audit")
        self.root = tracefs.find_tracefs()
        if self.root is None:
            self.section["mounted"] = tracefs.TRACEFS_CANDIDATES[0]
            self._commit()
            self.root = tracefs.find_tracefs(mount=True)
            if self.root is None:
                del self.section["mounted"]
                self._commit()
                raise TracefsError("no tracefs: mount it (mount -t tracefs nodev "
                                   "/sys/kernel/tracing) or use --backend audit")
        arch = host_arch(os.uname().machine)
        self.mode = self._choose_probe(arch)
        name = tracefs.instance_name()
        self.section["instance"] = os.path.join(self.root, "instances", name)
        self._commit()
        try:
            self.instance = tracefs.Instance.create(self.root, name)
        except tracefs.TracefsError as exc:          # reported as a message (see above)
            raise TracefsError(str(exc))
        inst = self.instance
        inst.set_option("record-tgid", True)
        inst.choose_clock()
        # Events first, buffer size second, with the instance's recording off meanwhile.
        # Before ~6.6 one kernel-wide flag says "buffers expanded": enabling an event
        # anywhere expands the top-level buffer to its default size (what any first tracer
        # does), while resizing first would set the flag with the top-level buffer still at
        # its 7 KB placeholder, leaving every later user of it a crippled buffer.
        inst.write("tracing_on", "0")
        if self.mode == "kprobe":
            self._add_probes(name, arch)
            for probe in self.probes:
                for event in probe.events:
                    inst.enable_event(probe.group, event)
        else:
            for call in self.events:
                for side in ("enter", "exit"):
                    inst.enable_event("syscalls", "sys_%s_%s" % (side, call))
        inst.set_buffer_kb(self.buffer_kb)
        inst.write("tracing_on", "1")
        compat_probes = any(probe.arch != arch for probe in self.probes)
        clock_id = _clock_id(inst.clock)
        boot_offset = clock_gettime_ns(_clock_id("boot")) - clock_gettime_ns(clock_id)
        enricher = self.enricher = ProcEnricher(self.hostname,
                                                boot_ns_of_trace=lambda ts: ts + boot_offset)
        # the arch of a line whose symbol does not name it (aliases such as
        # __do_sys_munlockall) is unknown when 32-bit callers are probed too, unless the
        # probe fetched the syscall number (orig_ax=, see probes.py)
        self.pairer = Pairer(self.emit, arch=None if compat_probes else arch,
                             clock_offset_ns=inst.clock_offset_ns, hostname=self.hostname,
                             events=self.events, enricher=enricher, own_pid=os.getpid(),
                             long_bits=tracefs.kernel_long_bits(self.root))
        self._overrun_at_start = self._overruns()
        inst.open_pipe()
        self._clock_id = clock_id
        how = ("syscall tracepoints (native callers only: 32-bit callers are not traced by "
               "syscall tracepoints)" if self.mode == "tracepoint"
               else "kprobes %s" % ", ".join(probe.symbol for probe in self.probes))
        return "backend=tracefs probe=%s instance=%s buffer=%dKB/cpu clock=%s; %s" % (
            self.mode, inst.path, self.buffer_kb, inst.clock, how)

    def _choose_probe(self, arch):
        events_dir = os.path.join(self.root, "events", "syscalls")
        have_tracepoints = all(
            os.path.isdir(os.path.join(events_dir, "sys_enter_" + call)) for call in self.events)
        have_kprobes = os.path.exists(os.path.join(self.root, "kprobe_events"))
        if self.probe_mode == "tracepoint" or (self.probe_mode == "auto" and have_tracepoints):
            if not have_tracepoints:
                raise TracefsError("this kernel has no syscall tracepoints for %s" %
                                   ",".join(self.events))
            return "tracepoint"
        if not have_kprobes:
            raise TracefsError("this kernel has no kprobe_events (CONFIG_KPROBE_EVENTS) %s"
                               % ("and no syscall tracepoints" if self.probe_mode == "auto"
                                  else ""))
        return "kprobe"

    def _add_probes(self, group, arch):
        with open(os.path.join(self.root, "README")) as handle:
            x_types = "x8/16/32/64" in handle.read()
        names = kprobes.function_names(self.root)
        self.probes, notes = kprobes.plan(group, arch, names, self.events, x_types,
                                          kprobes.kallsyms_addresses())
        for note in notes:
            self.log("kprobes: " + note)
        if not self.probes:
            raise TracefsError("no syscall entry symbol to probe for %s" % ",".join(self.events))
        if not x_types:
            self.parser.bare_hex = True
        added = self.section.setdefault("probes", [])
        path = os.path.join(self.root, "kprobe_events")
        for probe in self.probes:
            for line, event in ((probe.entry_line, probe.events[0]),
                                (probe.return_line, probe.events[1])):
                added.append("%s/%s" % (probe.group, event))
                self._commit()
                try:
                    _append(path, line)
                except OSError as exc:
                    added.pop()
                    self._commit()
                    raise TracefsError("kprobe_events refused %r: %s%s" % (
                        line, exc.strerror, _error_log(self.root)))

    def set_emit(self, emit):
        """Send the next events elsewhere (SIGHUP reload); no cost per event."""
        self.emit = emit
        if self.pairer is not None:
            self.pairer._emit = emit

    # -- reading -----------------------------------------------------------------------

    def fileno(self):
        return self.instance.pipe_fd

    def pump(self):
        """Read what trace_pipe has now, in large chunks. Returns the bytes read."""
        fd = self.instance.pipe_fd
        chunks = []
        while True:
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not data:
                break
            chunks.append(data)
        if not chunks:
            return 0
        data = self._partial + b"".join(chunks)
        lines = data.split(b"\n")
        self._partial = lines.pop()            # an unfinished last line waits for the rest
        feed = self.pairer.feed
        for record in self.parser.records(lines):
            feed(record)
        size = len(data) - len(self._partial)
        self.bytes_read += size
        return size

    def tick(self, now):
        self.pairer.expire(clock_gettime_ns(self._clock_id))

    finished = False                   # (the trace pipe never ends by itself)

    def run(self, should_stop, wakeup_fd=None, on_tick=None):
        # Read as soon as records are there: the sooner /proc is read, the more processes
        # are still alive to tell their details (see enrich.ProcEnricher).
        loop.run(self, should_stop, wakeup_fd, on_tick)

    def _overruns(self):
        if self.instance is None:
            return {}
        return {cpu: values.get("overrun", 0) + values.get("dropped events", 0)
                for cpu, values in self.instance.cpu_stats().items()}

    # -- stop --------------------------------------------------------------------------

    def stop(self):
        """Disable, drain, remove. Returns problems (empty when tracefs is as found)."""
        problems = []
        inst = self.instance
        if inst is not None and os.path.isdir(inst.path):
            inst.disable_all_events()
            if inst.pipe_fd is not None:
                for _ in range(5):                       # what was written before disable
                    if not self.pump():
                        break
            if self.pairer is not None:
                if self._partial:
                    self._partial += b"\n"
                    self.pump()
                self.parser.finish()
                self.pairer.flush()
                now = self._overruns()
                self.overrun = sum(max(0, count - self._overrun_at_start.get(cpu, 0))
                                   for cpu, count in now.items())
        problems += remove_changes(self.root, self.section, inst)
        self._commit()
        return problems

    def stats(self):
        pairer = self.pairer
        lost_lines = pairer.lost if pairer else 0
        return {"backend": "tracefs", "mode": self.mode,
                "events": pairer.events if pairer else 0,
                "lost": max(self.overrun, lost_lines), "overrun": self.overrun,
                "lost_lines": lost_lines, "incomplete": pairer.incomplete if pairer else 0,
                "rejected_lines": sum(self.parser.rejected.values()),
                "in_flight": pairer.in_flight if pairer else 0, "bytes": self.bytes_read,
                "proc_gone": self.enricher.gone if self.enricher else 0,
                "pid_reused": self.enricher.reused if self.enricher else 0,
                "stale_columns": self.enricher.stale_columns if self.enricher else 0}


def _append(path, line):
    """Add a line to kprobe_events without truncating it (O_APPEND: other tools' probes
    stay; opening it for writing without O_APPEND would clear them all)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def _error_log(root):
    try:
        with open(os.path.join(root, "error_log")) as handle:
            lines = [line.rstrip() for line in handle if line.strip()]
        return " (error_log: %s)" % " | ".join(lines[-3:]) if lines else ""
    except OSError:
        return ""


def remove_changes(root, section, inst=None):
    """Undo ``section`` (a live run's or a dead run's): instance, probes, mount.
    Returns problems (strings)."""
    problems = []
    path = section.get("instance")
    if inst is None and path:
        inst = tracefs.Instance(os.path.dirname(os.path.dirname(path)), os.path.basename(path))
    if inst is not None:
        try:
            inst.remove()
        except tracefs.TracefsError as exc:
            problems.append(str(exc))
    section.pop("instance", None)
    root = root or (os.path.dirname(os.path.dirname(path)) if path else None)
    remaining = []
    for probe in reversed(section.get("probes", [])):
        try:
            _append(os.path.join(root, "kprobe_events"), "-:" + probe)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                problems.append("could not remove kprobe %s: %s" % (probe, exc.strerror))
                remaining.append(probe)
    section["probes"] = remaining
    if not remaining:
        section.pop("probes", None)
    mounted = section.get("mounted")
    if mounted and not problems:
        if os.system("umount %s >/dev/null 2>&1" % mounted) == 0:
            section.pop("mounted", None)
        else:
            problems.append("tracefs stays mounted at %s (busy)" % mounted)
    return problems
