"""Who each thread is, built from the trace stream itself: the identity model of the
tracefs backend. Pure (no /proc reads here: the snapshot comes in as data).

Why: a syscall tracepoint record carries only the thread id (common_pid). The tgid and
comm columns of trace text come from maps ftrace fills at context switches
(saved_tgids, saved_cmdlines), which do not know a brand-new task and may still hold a
former task of the same pid; and /proc, read after the fact, has nothing left of a
process that lived a millisecond. The task lifecycle tracepoints, enabled in the same
instance, say everything that matters in stream order:

* ``task_newtask`` (run by the parent thread; ``pid`` the new task, ``comm`` its name,
  ``clone_flags``): CLONE_THREAD -> a thread of the parent's process; otherwise a new
  process whose parent is the creating thread's process (CLONE_PARENT: that process's
  parent), which inherits its executable;
* ``task_rename``: the new comm, exact, at the moment of prctl(PR_SET_NAME), a write to
  /proc/TID/comm, or exec;
* ``sched_process_exec``: the file passed to execve (``filename``; as given, so it may be
  relative, or a script whose interpreter /proc would show), and ``old_pid`` when a
  non-leader thread execs and takes over the leader's id;
* ``sched_process_exit``: the thread is gone (``group_dead``, where the kernel has it, or
  the last known thread: the process is gone; its children then belong to a reaper).

The table starts from a /proc snapshot taken after these events were enabled and before
the syscall events are (see the tracefs source), so every task that can make a traced call
is known, and events apply on top of the snapshot in time order.

Bounded: ``max_threads`` threads and as many processes; an exit lost in an overwritten ring
buffer would otherwise leave its thread behind forever. Past the bound the oldest entries
go (counted in ``evicted``). After a loss (``lost()``), entries not confirmed by the
stream since are marked uncertain: callers check them against /proc.
"""

from ..procfs import SnapshotTask  # noqa: F401 (the snapshot's rows, read by procfs)
from .decode import CLONE_PARENT, CLONE_THREAD, EXEC, NEWTASK, RENAME, TASK_EXIT

#: exe_source values: where ``exe`` came from.
EXE_PROC = "proc"            # /proc/PID/exe, the kernel's resolved link
EXE_EXEC = "exec"            # the filename passed to execve, as the process gave it
EXE_INHERITED = "inherited"  # copied at fork from the parent (itself proc or exec)


class Thread(object):
    __slots__ = ("tid", "tgid", "comm", "start_ns", "generation")

    def __init__(self, tid, tgid, comm, start_ns, generation):
        self.tid = tid
        self.tgid = tgid              # None: not known (a rename of a task never seen)
        self.comm = comm              # exact bytes
        self.start_ns = start_ns      # CLOCK_BOOTTIME ns, None when unknown
        self.generation = generation  # loss generation of the last stream confirmation


class Proc(object):
    __slots__ = ("tgid", "ppid", "exe", "exe_source", "start_ns", "threads", "generation",
                 "parent_start_ns")

    def __init__(self, tgid, ppid, exe, exe_source, start_ns, generation, parent_start_ns=None):
        self.tgid = tgid
        self.ppid = ppid              # host tgid of the parent process, None when unknown
        self.exe = exe                # bytes, None when unknown
        self.exe_source = exe_source
        self.start_ns = start_ns      # leader start, CLOCK_BOOTTIME ns
        self.threads = 0
        self.generation = generation
        self.parent_start_ns = parent_start_ns


class Identity(object):
    """What the model says about the thread that made a call."""

    __slots__ = ("tid", "tgid", "ppid", "comm", "exe", "exe_source", "start_ns",
                 "leader_start_ns", "parent_start_ns", "uncertain")

    def __init__(self, thread, proc, parent, uncertain):
        self.tid = thread.tid
        self.tgid = thread.tgid
        self.comm = thread.comm
        self.start_ns = thread.start_ns
        self.ppid = proc.ppid if proc is not None else None
        self.exe = proc.exe if proc is not None else None
        self.exe_source = proc.exe_source if proc is not None else None
        self.leader_start_ns = proc.start_ns if proc is not None else None
        self.parent_start_ns = parent.start_ns if parent is not None else (
            proc.parent_start_ns if proc is not None else None)
        self.uncertain = uncertain


class TaskTable(object):
    """The identity model. ``apply(record)`` for each TaskRecord in time order;
    ``identify(tid)`` for each call."""

    def __init__(self, max_threads=1 << 18, trace_to_boot_ns=None):
        self.max_threads = max_threads
        self.trace_to_boot_ns = trace_to_boot_ns or (lambda ts: None)
        self.threads = {}
        self.procs = {}
        self.generation = 0
        # counters
        self.applied = 0
        self.evicted = 0
        self.unknown_parent = 0       # a newtask whose creating thread was never seen

    # -- building -----------------------------------------------------------------------

    def load_snapshot(self, tasks):
        """Threads that exist already (SnapshotTask), before any event is applied."""
        gen = self.generation
        for task in tasks:
            proc = self.procs.get(task.tgid)
            if proc is None:
                proc = Proc(task.tgid, task.ppid, task.exe, EXE_PROC if task.exe else None,
                            None, gen)
                self._add_proc(proc)
            if task.tid == task.tgid:
                proc.start_ns = task.start_ns
            proc.threads += 1
            self._add_thread(Thread(task.tid, task.tgid, task.comm, task.start_ns, gen))
        for proc in self.procs.values():
            parent = self.procs.get(proc.ppid)
            if parent is not None:
                proc.parent_start_ns = parent.start_ns

    def apply(self, record):
        kind = record.kind
        self.applied += 1
        if kind == NEWTASK:
            self._newtask(record)
        elif kind == RENAME:
            thread = self.threads.get(record.pid)
            if thread is None:
                # a task the model never saw: its name is known, its process is not
                self._add_thread(Thread(record.pid, None, record.comm, None, self.generation))
            else:
                thread.comm = record.comm
                thread.generation = self.generation
        elif kind == EXEC:
            self._exec(record)
        elif kind == TASK_EXIT:
            self._exit(record)

    def _newtask(self, record):
        gen = self.generation
        parent_thread = self.threads.get(record.tid)
        parent_proc = self.procs.get(parent_thread.tgid) if parent_thread is not None \
            and parent_thread.tgid is not None else None
        if parent_thread is None:
            self.unknown_parent += 1
        start = self.trace_to_boot_ns(record.ts_ns)
        old = self.threads.pop(record.pid, None)       # a pid whose exit we missed
        if old is not None:
            self._drop_thread_from_proc(old)
        if record.clone_flags & CLONE_THREAD:
            tgid = parent_thread.tgid if parent_thread is not None else None
            if parent_proc is not None:
                parent_proc.threads += 1
            self._add_thread(Thread(record.pid, tgid, record.comm, start, gen))
            return
        if parent_proc is not None:
            if record.clone_flags & CLONE_PARENT:
                ppid, parent_start = parent_proc.ppid, parent_proc.parent_start_ns
            else:
                ppid, parent_start = parent_proc.tgid, parent_proc.start_ns
            exe = parent_proc.exe
            source = EXE_INHERITED if exe is not None else None
        else:
            ppid = parent_start = exe = source = None
        self.procs.pop(record.pid, None)
        proc = Proc(record.pid, ppid, exe, source, start, gen, parent_start)
        proc.threads = 1
        self._add_proc(proc)
        self._add_thread(Thread(record.pid, record.pid, record.comm, start, gen))

    def _exec(self, record):
        gen = self.generation
        thread = self.threads.get(record.old_pid)
        if record.old_pid != record.pid and thread is not None:
            # a non-leader thread exec'd: it takes over the leader's id (de_thread)
            del self.threads[record.old_pid]
            leader = self.threads.pop(record.pid, None)
            if leader is not None:
                thread.start_ns = leader.start_ns
            thread.tid = record.pid
            self.threads[record.pid] = thread
        elif thread is None:
            thread = self.threads.get(record.pid)
        if thread is None:
            return
        thread.generation = gen
        proc = self.procs.get(thread.tgid) if thread.tgid is not None else None
        if proc is not None and record.filename is not None:
            proc.exe = record.filename
            proc.exe_source = EXE_EXEC
            proc.generation = gen

    def _exit(self, record):
        thread = self.threads.pop(record.pid, None)
        if thread is None:
            return
        proc = self._drop_thread_from_proc(thread)
        if proc is not None and (record.group_dead or proc.threads <= 0):
            # the process is gone; its children now belong to a reaper (ppid unknown)
            self.procs.pop(proc.tgid, None)

    def _drop_thread_from_proc(self, thread):
        proc = self.procs.get(thread.tgid) if thread.tgid is not None else None
        if proc is not None:
            proc.threads -= 1
        return proc

    def _add_thread(self, thread):
        threads = self.threads
        threads[thread.tid] = thread
        if len(threads) > self.max_threads:
            oldest = next(iter(threads))
            self._drop_thread_from_proc(threads.pop(oldest))
            self.evicted += 1

    def _add_proc(self, proc):
        procs = self.procs
        procs[proc.tgid] = proc
        if len(procs) > self.max_threads:
            del procs[next(iter(procs))]
            self.evicted += 1

    def lost(self):
        """Events were overwritten: what the model knows may be stale from here on."""
        self.generation += 1

    # -- reading ------------------------------------------------------------------------

    def identify(self, tid):
        """The Identity of the thread ``tid`` now (in stream time), or None when the model
        does not know it (then only /proc can tell)."""
        thread = self.threads.get(tid)
        if thread is None:
            return None
        proc = self.procs.get(thread.tgid) if thread.tgid is not None else None
        parent = None
        reparented = False
        if proc is not None and proc.ppid:
            parent = self.procs.get(proc.ppid)
            # the parent process exited before this call: the process now belongs to a
            # reaper (init or a subreaper) that the stream does not name
            reparented = parent is None
        uncertain = thread.generation < self.generation or thread.tgid is None or (
            proc is not None and proc.generation < self.generation and
            proc.exe_source != EXE_PROC)
        identity = Identity(thread, proc, parent, uncertain)
        if reparented:
            identity.ppid = identity.parent_start_ns = None
        return identity

    def __len__(self):
        return len(self.threads)
