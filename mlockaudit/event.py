"""The normalized event: one call of the memory-locking surface (the mlock family, and
mmap/shmctl/setrlimit/prlimit64 when they lock or change the memlock limit), whichever
backend saw it.

Backends and ``replay`` only fill an :class:`Event` and its :class:`Process`; formats only
read them. Nothing else crosses that line, so a field means the same thing for audit
records and trace lines.

Why two objects: everything about the calling process (ids, comm, exe, credentials, command
line) is the same for every call it makes until it changes, while the call itself (time,
thread, arguments, return) differs each time. Producers cache one immutable Process per
distinct identity and formats cache what they render of it (``Process.rendered``), so a
storm of calls from one process costs one identity parse and one render.

Conventions that every producer follows:

* ``None`` means "the source did not tell us". Nothing is guessed: audit records carry
  the thread-group id but not the thread id, so ``tid`` stays None for them; a replayed
  trace capture without a clock anchor has no wall-clock ``timestamp``.
* Strings that come from the traced process (comm, exe, proctitle, cmdline) are ``str``
  decoded with ``surrogateescape``, so every raw byte survives until a format decides how
  to show it.
* ``args`` holds the raw register values (unsigned ints) in Tracee's argument order;
  the C type of each argument (``ARG_SPECS``) decides how it is shown.
"""

from . import syscalls

#: The latest ``timestamp`` an Event carries: epoch ns in a signed 64-bit integer, as
#: Tracee's (Go's UnixNano), i.e. 2262-04-11. Producers give None for what lies beyond.
MAX_TIMESTAMP_NS = 2 ** 63 - 1


class Process(object):
    """The calling process as the source saw it. Never mutated once built: it is shared
    by many events and formats cache their rendering of it in ``rendered``."""

    __slots__ = (
        "pid",            # host tgid
        "ppid",           # host parent tgid
        "ns_pid",         # tgid and ppid inside the process's pid namespace
        "ns_ppid",
        "uid",            # real uid
        "comm",           # task comm (<= 15 bytes), surrogateescape str
        "exe",            # executable path, surrogateescape str
        "hostname",       # node the process runs on
        "container_id",   # "" when known not to be in a container, None when unknown
        "start_time",     # epoch ns the thread-group leader started (Tracee's entity ids)
        "parent_start_time",  # epoch ns the parent process's leader started
        "mnt_ns",         # mount and pid namespace inode numbers (/proc/PID/ns/*)
        "pid_ns",
        "cgroup_id",      # cgroup v2 id (the inode of its cgroup directory)
        "extra",          # dict: what this source knows beyond Tracee's fields
        "rendered",       # format name -> cached rendering (owned by the formats)
    )

    def __init__(self, pid=None, ppid=None, ns_pid=None, ns_ppid=None, uid=None, comm=None,
                 exe=None, hostname=None, container_id=None, extra=None, start_time=None,
                 parent_start_time=None, mnt_ns=None, pid_ns=None, cgroup_id=None):
        self.pid = pid
        self.ppid = ppid
        self.ns_pid = ns_pid
        self.ns_ppid = ns_ppid
        self.uid = uid
        self.comm = comm
        self.exe = exe
        self.hostname = hostname
        self.container_id = container_id
        self.start_time = start_time
        self.parent_start_time = parent_start_time
        self.mnt_ns = mnt_ns
        self.pid_ns = pid_ns
        self.cgroup_id = cgroup_id
        self.extra = extra if extra is not None else {}
        self.rendered = {}

    def replace(self, **changes):
        """A copy with ``changes`` applied (and no rendering cache of its own)."""
        copy = Process.__new__(Process)
        for name in Process.__slots__:
            setattr(copy, name, changes[name] if name in changes else getattr(self, name))
        copy.rendered = {}
        return copy

    def __repr__(self):
        return "Process(pid=%s comm=%r)" % (self.pid, self.comm)


class Event(object):
    """One observed call. See the module docstring for the conventions."""

    __slots__ = (
        "name",           # "mlock2", "mlock", ...
        "backend",        # "audit" or "tracefs"
        "probe",          # how tracefs saw it: "tracepoint" or "kprobe" (None for audit)
        "process",        # Process
        "timestamp",      # epoch ns (int) or None
        "arch",           # caller's arch: "x86_64", "i386", "aarch64", "arm", or None
        "syscall_nr",     # number on the caller's arch, or None
        "tid",            # host thread id
        "ns_tid",         # thread id inside the pid namespace
        "cpu",            # CPU the call ran on (Tracee's processorId)
        "args",           # tuple of raw unsigned values (or None each), Tracee order
        "ret",            # signed return value, None when the exit was never seen
        "extra",          # dict: facts about this call beyond Tracee's (serial, ...)
        "thread_start",   # epoch ns the calling thread started, or None
    )

    def __init__(self, name, backend, process, timestamp=None, arch=None, syscall_nr=None,
                 tid=None, ns_tid=None, cpu=None, args=(), ret=None, extra=None, probe=None,
                 thread_start=None):
        self.name = name
        self.backend = backend
        self.probe = probe
        self.process = process
        self.timestamp = timestamp
        self.arch = arch
        self.syscall_nr = syscall_nr
        self.tid = tid
        self.ns_tid = ns_tid
        self.cpu = cpu
        self.args = args
        self.ret = ret
        self.extra = extra if extra is not None else {}
        self.thread_start = thread_start

    def replace(self, **changes):
        """A copy with ``changes`` applied."""
        copy = Event.__new__(Event)
        for name in Event.__slots__:
            setattr(copy, name, changes[name] if name in changes else getattr(self, name))
        return copy

    def __repr__(self):
        return "Event(%s pid=%s tid=%s comm=%r args=%r ret=%s)" % (
            self.name, self.process.pid, self.tid, self.process.comm, self.args, self.ret)

    # -- shortcuts to the process, for readers that do not care about the split ---------

    @property
    def pid(self):
        return self.process.pid

    @property
    def ppid(self):
        return self.process.ppid

    @property
    def uid(self):
        return self.process.uid

    @property
    def comm(self):
        return self.process.comm

    @property
    def exe(self):
        return self.process.exe

    @property
    def hostname(self):
        return self.process.hostname

    # -- derived views, shared by every format ------------------------------------------

    @property
    def flags(self):
        """The flags argument (mlock2, mlockall) as a signed C int, else None."""
        position = FLAGS_POSITION.get(self.name)
        if position is None or position >= len(self.args):
            return None
        return to_c_int(self.args[position])

    def arg(self, name):
        """The raw value of the argument called ``name`` (Tracee's name, ARG_SPECS), or
        None when this call has no such argument or its value is unknown. Detections
        read arguments by name so that a rule over ``len`` also reads mmap's ``length``
        the day ARG_SPECS learns mmap, and never a wrong position."""
        for index, (arg_name, _c_type) in enumerate(syscalls.ARG_SPECS.get(self.name, ())):
            if arg_name == name:
                return self.args[index] if index < len(self.args) else None
        return None

    def arg_values(self):
        """[(name, C type, value)] with values shaped by their C type, as Tracee shows them:
        pointers (every type ending in ``*``) as ``"0x..."`` strings, size_t and off_t as
        unsigned ints, int and pid_t as signed 32-bit."""
        out = []
        for (arg_name, c_type), raw in zip(syscalls.ARG_SPECS.get(self.name, ()), self.args):
            if raw is None:
                value = None
            elif c_type[-1:] == "*":
                value = "0x%x" % raw
            elif c_type == "int" or c_type == "pid_t":
                value = to_c_int(raw)
            else:
                value = raw
            out.append((arg_name, c_type, value))
        return out

    def decoded(self):
        """What ``mlockaudit`` adds to the arguments of a surface call beyond the family
        (syscalls.decode_surface): MAP_*/PROT_* names, the locked length, the shmctl
        command, the resource and the new limit: None, because no backend reads user
        memory (audit and syscall tracepoints see only the pointer; our kprobes do not
        fetch through it). {} for the mlock family."""
        if self.name not in syscalls.LOCKING:
            return {}
        return syscalls.decode_surface(self.name, self.args)

    @property
    def action(self):
        """locked-memory, unlocked-memory or changed-memlock-limit (syscalls.action)."""
        return syscalls.action(self.name, self.args)

    @property
    def errno_name(self):
        return syscalls.errno_name(self.ret)

    @property
    def outcome(self):
        """"success", "failure" or "unknown" (the exit was never seen)."""
        if self.ret is None:
            return "unknown"
        return "failure" if self.ret < 0 else "success"


FLAGS_POSITION = {name: [arg for arg, _ in specs].index("flags")
                  for name, specs in syscalls.ARG_SPECS.items()
                  if "flags" in [arg for arg, _ in specs]}


def to_c_int(value):
    """A register value as the C ``int`` the kernel reads from it (low 32 bits, signed)."""
    if value is None:
        return None
    value &= 0xFFFFFFFF
    return value - 0x100000000 if value & 0x80000000 else value


def to_signed64(value):
    """A 64-bit register value as a signed ``long`` (trace_pipe prints -22 as 0xff..ea)."""
    value &= 0xFFFFFFFFFFFFFFFF
    return value - 0x10000000000000000 if value & 0x8000000000000000 else value


def to_signed(value, bits):
    """A register value as a signed ``long`` of a ``bits``-wide kernel (64 or 32: a 32-bit
    kernel prints -22 as 0xffffffea)."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value
