"""The tracefs backend (``start --backend tracefs``): a private ftrace instance, read in
its binary form, one stream in time order, every call credited from the stream's own
model of the tasks.

Setup, in the order the kernel and the identity model need (lifecycle.py records each
change first):

1. mount tracefs if needed, create the instance ``mlockaudit_<pid>_<starttime>``, pick its
   clock, tracing off;
2. enable the task lifecycle events (task_newtask, task_rename, sched_process_exec,
   sched_process_exit) -- the first event enabled anywhere makes old kernels expand the
   top-level buffer to its default size, so this comes before sizing ours -- then size
   our buffer and turn tracing on;
3. open every CPU's ``trace_pipe_raw`` and take the /proc snapshot: from now on every
   change of a task is in the stream, and every task that exists is in the snapshot;
4. only then enable the calls (syscall tracepoints, or our kprobe group): every call is
   after the snapshot, so its thread is known. The calls that lock only sometimes (mmap
   with MAP_LOCKED, shmctl SHM_LOCK/SHM_UNLOCK, RLIMIT_MEMLOCK changes) get their entry
   event's ``filter`` first (eventfilter.py, recorded in the session state), so the
   kernel never writes a plain mmap's entry; their exits, which have only ``ret``, are
   enabled unfiltered and dropped at decode unless their thread's entry was seen
   (decode.py); mmap's exit can be left out (``--mmap-exits none``: returnValue null).

Reading (``pump``): each CPU's pages until it is empty or the per-pump bound, decoded
(decode.py), merged across CPUs by time (merge.py), then in order: lifecycle records
update the model (tasks.py), calls are paired entry/exit per thread (pairing.py) and
emitted with the identity the model gives at the call and what /proc adds while the
process lives (enrich.py).

Loss: the ring buffer never makes a caller wait; under a storm it overwrites. The pages say
so (RB_MISSED_EVENTS, with the count when stored) and the per-CPU ``overrun`` counter
counts every overwritten event; both are reported, and a call that lost its entry or exit
is still emitted, marked incomplete. After a loss the model may have missed a fork or a
rename: identities not confirmed since are checked against /proc.
"""

import errno
import os

from .. import compat, host, procfs
from ..enrich import ProcCache
from ..event import Process
from ..source import Source
from ..syscalls import LOCKING, SURFACE, SYSCALL_NUMBERS
from . import decode, instance as tracefs, probes as kprobes, ringbuf
from .eventfilter import filter_expression
from .lifecycle import TracefsError, TracefsSetup
from .merge import Merger
from .pairing import Pairer
from .tasks import EXE_PROC, TaskTable

#: Per-CPU ring buffer, in KB: see scripts/bench-tracefs-loss for how much of a storm each
#: size keeps. The total cap keeps a many-CPU host from pinning too much memory.
DEFAULT_BUFFER_KB = 16384
TOTAL_BUFFER_CAP_KB = 128 * 1024
#: Pages read per CPU per pump: the bound that keeps memory flat under any storm (the
#: ring buffer holds the rest, or overwrites it, counted).
MAX_PAGES_PER_PUMP = 64
LIFECYCLE = (("task", "task_newtask"), ("task", "task_rename"),
             ("sched", "sched_process_exec"), ("sched", "sched_process_exit"))
STATS_POLL_SECONDS = 2.0


def default_buffer_kb(cpus=None):
    cpus = cpus or os.cpu_count() or 1
    return max(1408, min(DEFAULT_BUFFER_KB, TOTAL_BUFFER_CAP_KB // cpus))


class TracefsSource(Source):
    name = "tracefs"

    def __init__(self, emit, session, options=None):
        Source.__init__(self, emit, session, options)
        self.events = list(self.options.events) if self.options.events else list(SURFACE)
        # calls whose exit is not traced: mmap under --mmap-exits none
        self.no_exit = ("mmap",) if getattr(self.options, "mmap_exits", "all") == "none" \
            else ()
        self.buffer_kb = self.options.buffer_kb or default_buffer_kb()
        self.hostname = self.options.hostname
        self.setup_state = TracefsSetup(session)
        self.instance = None
        self.mode = None
        self.probes = []
        self.decoder = None
        self.merger = Merger()
        self.tasks = None
        self.pairer = None
        self.proc_cache = ProcCache()
        self.fds = {}
        self.read_size = 4096
        self._overrun_at_start = {}
        self._last_stats = 0.0
        self.overrun = 0
        self.missed = 0            # events the pages say were overwritten (known counts)
        self.missed_unknown = 0    # pages that say "lost" without a count
        self.pages = 0
        self.bad_pages = 0
        self._clock_id = compat.CLOCK_MONOTONIC
        self._boot_offset = 0
        self._own_pid = os.getpid()
        self._identities = {}
        self.identity_sources = {"stream": 0, "proc": 0, "unknown": 0}

    # -- setup ------------------------------------------------------------------------

    def setup(self):
        if host.lockdown_mode() == "confidentiality":
            raise TracefsError(errno.EPERM, "lockdown=confidentiality: tracefs and kprobes "
                               "are closed; use --backend audit")
        lifecycle = self.setup_state
        root = lifecycle.mount()
        arch = host.native_arch()
        self.mode = self._choose_probe(root)
        name = tracefs.instance_name()
        inst = self.instance = lifecycle.create_instance(name)
        inst.choose_clock()
        inst.write("tracing_on", "0")
        layout = ringbuf.parse_header_page(_read(root, "events/header_page"))
        self.decoder = decode.Decoder(layout)
        self.read_size = _subbuffer_bytes(inst) or layout.page_size
        lifecycle_ok = self._enable_lifecycle(inst)
        inst.set_buffer_kb(self.buffer_kb)
        self._clock_id = _clock_id(inst.clock)
        self._boot_offset = compat.clock_gettime_ns(compat.CLOCK_BOOTTIME) - \
            compat.clock_gettime_ns(self._clock_id)
        boot_epoch = host.boot_epoch_ns()
        self.tasks = TaskTable(trace_to_boot_ns=lambda ts: ts + self._boot_offset)
        self._boot_epoch = boot_epoch
        self._overrun_at_start = self._overruns()
        inst.write("tracing_on", "1")
        self.fds = inst.open_raw()
        # the snapshot: every task that exists now (the stream tells the rest)
        self.tasks.load_snapshot(procfs.PROC.snapshot_tasks())
        compat_probes = False
        if self.mode == "kprobe":
            self._add_probes(name, arch, root)
            compat_probes = any(probe.arch != arch for probe in self.probes)
            for probe in self.probes:
                for event in probe.events:
                    inst.enable_event(probe.group, event)
        else:
            for call in self.events:
                filtered = call in LOCKING
                for side in ("enter", "exit"):
                    if side == "exit" and call in self.no_exit:
                        continue
                    event = "sys_%s_%s" % (side, call)
                    fmt = self._format(inst, "syscalls", event)
                    if side == "enter":
                        self.decoder.add_syscall_enter(fmt, call, arch, filtered)
                        if filtered:
                            lifecycle.set_filter("syscalls", event,
                                                 filter_expression(call, arch))
                    else:
                        self.decoder.add_syscall_exit(fmt, call, arch, filtered)
                    inst.enable_event("syscalls", event)
        self.pairer = Pairer(self.emit, arch=None if compat_probes else arch,
                             clock_offset_ns=inst.clock_offset_ns, hostname=self.hostname,
                             events=self.events, own_pid=self._own_pid,
                             long_bits=host.long_bits_from_header_page(
                                 _read(root, "events/header_page")) or 64,
                             identify=self.identify, no_exit=self.no_exit)
        how = ("syscall tracepoints (native callers only: 32-bit callers are not traced by "
               "syscall tracepoints)" if self.mode == "tracepoint"
               else "kprobes %s" % ", ".join(probe.symbol for probe in self.probes))
        identity = ("identity from the stream (task lifecycle events, %d tasks at start)"
                    % len(self.tasks) if lifecycle_ok else
                    "identity from /proc only (this kernel lacks the task lifecycle events)")
        return "backend=tracefs probe=%s instance=%s buffer=%dKB/cpu clock=%s; %s; %s" % (
            self.mode, inst.path, self.buffer_kb, inst.clock, how, identity)

    def _format(self, inst, system, event):
        try:
            return ringbuf.parse_format(inst.read("events/%s/%s/format" % (system, event)),
                                        system)
        except (OSError, ringbuf.RingBufferError) as exc:
            raise TracefsError(errno.ENOENT, "cannot read the format of %s/%s: %s" % (
                system, event, exc))

    def _enable_lifecycle(self, inst):
        adders = {"task_newtask": self.decoder.add_task_newtask,
                  "task_rename": self.decoder.add_task_rename,
                  "sched_process_exec": self.decoder.add_sched_process_exec,
                  "sched_process_exit": self.decoder.add_sched_process_exit}
        complete = True
        for system, event in LIFECYCLE:
            if not os.path.isdir(inst.file("events/%s/%s" % (system, event))):
                complete = False
                continue
            adders[event](self._format(inst, system, event))
            inst.enable_event(system, event)
        return complete

    def _choose_probe(self, root):
        events_dir = os.path.join(root, "events", "syscalls")
        have_tracepoints = all(
            os.path.isdir(os.path.join(events_dir, "sys_enter_" + call)) for call in self.events)
        have_kprobes = os.path.exists(os.path.join(root, "kprobe_events"))
        probe = self.options.probe
        if probe == "tracepoint" or (probe == "auto" and have_tracepoints):
            if not have_tracepoints:
                raise TracefsError(errno.ENOENT, "this kernel has no syscall tracepoints for "
                                   "%s" % ",".join(self.events))
            return "tracepoint"
        if not have_kprobes:
            raise TracefsError(errno.ENOENT, "this kernel has no kprobe_events "
                               "(CONFIG_KPROBE_EVENTS)%s" % (
                                   " and no syscall tracepoints" if probe == "auto" else ""))
        return "kprobe"

    def _add_probes(self, group, arch, root):
        x_types = "x8/16/32/64" in _read(root, "README")
        names = kprobes.function_names(root)
        self.probes, notes = kprobes.plan(group, arch, names, self.events, x_types,
                                          kprobes.kallsyms_addresses(), self.no_exit)
        for note in notes:
            self.log("kprobes: " + note)
        if not self.probes:
            raise TracefsError(errno.ENOENT, "no syscall entry symbol to probe for %s"
                               % ",".join(self.events))
        for probe in self.probes:
            lines = ((probe.entry_line, probe.events[0]),) + (
                ((probe.return_line, probe.events[1]),) if probe.with_return else ())
            for line, event in lines:
                self.setup_state.add_probe_line(probe.group, event, line)
            filtered = probe.name in LOCKING
            entry = self._format(self.instance, probe.group, probe.events[0])
            if filtered:
                self.setup_state.set_filter(probe.group, probe.event,
                                            filter_expression(probe.name, probe.arch))
            arg_fields = kprobes.field_names(probe.name)
            arch_of_number = None
            if "orig_ax=" in probe.entry_line:
                arch_of_number = dict((number, probe_arch) for probe_arch in ("x86_64", "i386")
                                      for call, number in SYSCALL_NUMBERS[probe_arch].items()
                                      if call == probe.name)
            self.decoder.add_kprobe(entry, probe.name, probe.arch if not arch_of_number
                                    else None, arg_fields, arch_of_number, filtered)
            if probe.with_return:
                ret = self._format(self.instance, probe.group, probe.events[1])
                self.decoder.add_kretprobe(ret, probe.name, probe.arch if not arch_of_number
                                           else None, filtered)

    # -- identity -----------------------------------------------------------------------

    def identify(self, record):
        """(call record) -> (Process, namespaced tid, thread start epoch ns), at the call's
        place in the stream: the task model, then /proc for what only it knows."""
        tid = record.tid
        who = self.tasks.identify(tid)
        boot_ts = record.ts_ns + self._boot_offset
        source = "stream"
        if who is None or who.tgid is None:
            who = None
            thread = procfs.PROC.thread(tid)
            if thread is not None and procfs.ticks_to_ns(thread.start_ticks) <= boot_ts + 20000000:
                tgid, comm, start_ns = thread.tgid, thread.comm, procfs.ticks_to_ns(
                    thread.start_ticks)
                ppid = exe = exe_source = leader_start = parent_start = None
                source = "proc"
            else:
                self.identity_sources["unknown"] += 1
                return self._unknown_process(tid), None, None
        else:
            tgid, comm, start_ns = who.tgid, who.comm, who.start_ns
            ppid, exe, exe_source = who.ppid, who.exe, who.exe_source
            leader_start, parent_start = who.leader_start_ns, who.parent_start_ns
        details = self.proc_cache.details(tgid, leader_start, boot_ts)
        if details is not None:
            info = details.process
            if source == "proc" or (who is not None and who.uncertain):
                # the stream cannot vouch for these: the live process can
                ppid = info.ppid if ppid is None or source == "proc" else ppid
                exe, exe_source = (info.exe, EXE_PROC) if source == "proc" or exe is None \
                    else (exe, exe_source)
            leader_start = leader_start if leader_start is not None else details.start_ns
        ns_tid = self.proc_cache.thread_ns_tid(tid, start_ns, boot_ts) if details else None
        self.identity_sources[source] += 1
        key = (tgid, comm, ppid, exe, exe_source, id(details.process) if details else None,
               leader_start, parent_start, who.uncertain if who is not None else True)
        process = self._identities.get(key)
        if process is None:
            process = self._process(tgid, comm, ppid, exe, exe_source, details, leader_start,
                                    parent_start, source, who is not None and who.uncertain)
            if len(self._identities) >= 4096:
                self._identities.clear()
            self._identities[key] = process
        thread_start = start_ns + self._boot_epoch if start_ns is not None else None
        return process, ns_tid, thread_start

    def _epoch(self, boot_ns):
        return boot_ns + self._boot_epoch if boot_ns is not None else None

    def _process(self, tgid, comm, ppid, exe, exe_source, details, leader_start, parent_start,
                 source, uncertain):
        extra = {"identity": source}
        if uncertain:
            extra["identityUncertain"] = True
        if exe is not None and exe_source is not None:
            extra["exeSource"] = exe_source
        kwargs = {}
        if details is not None:
            info = details.process
            extra.update(euid=info.euid, suid=info.suid, fsuid=info.fsuid, gid=info.gid,
                         egid=info.egid, sgid=info.sgid, fsgid=info.fsgid,
                         cmdline=_text(info.cmdline))
            kwargs = dict(ns_pid=info.ns_pid, ns_ppid=info.ns_ppid, uid=info.uid,
                          container_id=info.container_id, mnt_ns=info.mnt_ns,
                          pid_ns=info.pid_ns, cgroup_id=details.cgroup_id)
        extra["procInfo"] = details is not None
        return Process(pid=tgid, ppid=ppid, comm=_text(comm), exe=_text(exe),
                       hostname=self.hostname, start_time=self._epoch(leader_start),
                       parent_start_time=self._epoch(parent_start), extra=extra, **kwargs)

    def _unknown_process(self, tid):
        return Process(pid=None, hostname=self.hostname,
                       extra={"identity": "unknown", "procInfo": False})

    def set_emit(self, emit):
        self.emit = emit
        if self.pairer is not None:
            self.pairer.set_emit(emit)

    # -- reading -----------------------------------------------------------------------

    def fileno(self):
        return None                   # pumped on the batch interval (see loop.py)

    def pump(self):
        """Read every CPU's pages (bounded), then apply what can be ordered."""
        read_start = compat.clock_gettime_ns(self._clock_id)
        busy = False
        count = 0
        for cpu, fd in self.fds.items():
            pages = 0
            drained = False
            records = []
            last_ts = None
            while pages < MAX_PAGES_PER_PUMP:
                try:
                    data = os.read(fd, self.read_size)
                except BlockingIOError:
                    drained = True
                    break
                except InterruptedError:
                    continue
                if not data:
                    drained = True
                    break
                pages += 1
                try:
                    page_records, missed, last_ts = self.decoder.decode(data, cpu)
                except ringbuf.RingBufferError:
                    self.bad_pages += 1
                    continue
                if missed is not None:
                    if missed > 0:
                        self.missed += missed
                    else:
                        self.missed_unknown += 1
                    self.tasks.lost()
                records.extend(page_records)
            if not drained:
                busy = True
            self.pages += pages
            count += len(records)
            self.merger.add(cpu, records, drained, read_start, last_ts)
        self._resolve_exits(self.merger.watermark())
        self._apply(self.merger.release())
        self.busy = busy
        return count

    def _resolve_exits(self, watermark):
        """Exits of filtered calls decoded before their entry (another CPU, read later)."""
        for cpu, record in self.decoder.resolve_exits(watermark):
            self.merger.insert(cpu, record)

    def _apply(self, records):
        apply_task = self.tasks.apply
        feed = self.pairer.feed
        task_record = decode.TaskRecord
        for record in records:
            if record.__class__ is task_record:
                apply_task(record)
            else:
                feed(record)

    def tick(self, now):
        self.pairer.expire(compat.clock_gettime_ns(self._clock_id))
        if now - self._last_stats >= STATS_POLL_SECONDS:
            self._last_stats = now
            self._poll_overrun()

    def _overruns(self):
        if self.instance is None:
            return {}
        return {cpu: values.get("overrun", 0) + values.get("dropped events", 0)
                for cpu, values in self.instance.cpu_stats().items()}

    def _poll_overrun(self):
        now = self._overruns()
        self.overrun = sum(max(0, count - self._overrun_at_start.get(cpu, 0))
                           for cpu, count in now.items())

    # -- stop --------------------------------------------------------------------------

    def stop(self):
        """Disable, drain, remove. Returns problems (empty when tracefs is as found)."""
        inst = self.instance
        if inst is not None and os.path.isdir(inst.path):
            inst.disable_all_events()
            if self.pairer is not None and self.fds:
                for _ in range(64):                    # what was written before disable
                    self.pump()
                    if not self.busy:
                        break
                self._resolve_exits(None)
                self._apply(self.merger.release(final=True))
                self.pairer.flush()
                self._poll_overrun()
        self.fds = {}                 # (the instance closes them: before its rmdir)
        return self.setup_state.remove()

    def stats(self):
        pairer = self.pairer
        lost = max(self.overrun, self.missed)
        return {"backend": "tracefs", "mode": self.mode,
                "events": pairer.events if pairer else 0, "lost": lost,
                "overrun": self.overrun, "missed": self.missed,
                "missed_unknown": self.missed_unknown,
                "incomplete": pairer.incomplete if pairer else 0,
                "in_flight": pairer.in_flight if pairer else 0,
                "pages": self.pages, "bad_pages": self.bad_pages,
                "held": self.merger.held, "forced_order": self.merger.forced,
                "tasks": len(self.tasks) if self.tasks else 0,
                "tasks_evicted": self.tasks.evicted if self.tasks else 0,
                "identity_stream": self.identity_sources["stream"],
                "identity_proc": self.identity_sources["proc"],
                "identity_unknown": self.identity_sources["unknown"],
                "proc_gone": self.proc_cache.gone,
                "lookalike_exits": self.decoder.exits_dropped if self.decoder else 0,
                "unknown_events": self.decoder.unknown if self.decoder else 0}


def _read(root, relative):
    with open(os.path.join(root, relative)) as handle:
        return handle.read()


def _subbuffer_bytes(inst):
    """The ring buffer's sub-buffer size where the kernel lets it differ from a page
    (``buffer_subbuf_size_kb``, 6.8+): one read returns one sub-buffer."""
    try:
        return int(inst.read("buffer_subbuf_size_kb").strip()) * 1024
    except (OSError, ValueError):
        return None


def _clock_id(name):
    return {"boot": compat.CLOCK_BOOTTIME}.get(name, compat.CLOCK_MONOTONIC)


def _text(raw):
    return raw.decode("utf-8", "surrogateescape") if raw is not None else None
