"""The normalized event: one call of the mlock family, whichever backend saw it.

Backends and ``replay`` only fill an :class:`Event`; formats only read it. Nothing else
crosses that line, so a field means the same thing for audit records and trace lines.

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


class Event(object):
    """One observed call. See the module docstring for the conventions."""

    __slots__ = (
        "timestamp",      # epoch ns (int) or None
        "name",           # "mlock2", "mlock", ...
        "arch",           # "x86_64", "i386", "aarch64", "arm", or None
        "syscall_nr",     # number on the caller's arch, or None
        "pid",            # host tgid
        "tid",            # host thread id
        "cpu",            # CPU the call ran on (Tracee's processorId)
        "ppid",           # host parent tgid
        "ns_pid",         # tgid, tid and ppid as seen inside the process's pid namespace
        "ns_tid",
        "ns_ppid",
        "uid",            # real uid
        "comm",           # task comm (<= 15 bytes), surrogateescape str
        "exe",            # executable path, surrogateescape str
        "args",           # tuple of raw unsigned values (or None each), Tracee order
        "ret",            # signed return value, None when the exit was never seen
        "hostname",       # node the call happened on
        "container_id",   # "" when known not to be in a container, None when unknown
        "backend",        # "audit" or "tracefs"
        "extra",          # dict: what this source knows beyond Tracee's fields
    )

    def __init__(self, name, backend, timestamp=None, arch=None, syscall_nr=None,
                 pid=None, tid=None, cpu=None, ppid=None, ns_pid=None, ns_tid=None, ns_ppid=None,
                 uid=None, comm=None, exe=None, args=(), ret=None, hostname=None,
                 container_id=None, extra=None):
        self.name = name
        self.backend = backend
        self.timestamp = timestamp
        self.arch = arch
        self.syscall_nr = syscall_nr
        self.pid = pid
        self.tid = tid
        self.cpu = cpu
        self.ppid = ppid
        self.ns_pid = ns_pid
        self.ns_tid = ns_tid
        self.ns_ppid = ns_ppid
        self.uid = uid
        self.comm = comm
        self.exe = exe
        self.args = args
        self.ret = ret
        self.hostname = hostname
        self.container_id = container_id
        self.extra = extra if extra is not None else {}

    def __repr__(self):
        return "Event(%s pid=%s tid=%s comm=%r args=%r ret=%s)" % (
            self.name, self.pid, self.tid, self.comm, self.args, self.ret)

    # -- derived views, shared by every format ------------------------------------------

    @property
    def flags(self):
        """The flags argument (mlock2, mlockall) as a signed C int, else None."""
        specs = syscalls.ARG_SPECS.get(self.name, ())
        for (arg_name, _), value in zip(specs, self.args):
            if arg_name == "flags":
                return to_c_int(value)
        return None

    def arg_values(self):
        """[(name, C type, value)] with values shaped by their C type, as Tracee shows them:
        pointers as ``"0x..."`` strings, size_t as unsigned int, int as signed 32-bit."""
        out = []
        for (arg_name, c_type), raw in zip(syscalls.ARG_SPECS.get(self.name, ()), self.args):
            if raw is None:
                value = None
            elif c_type == "const void*":
                value = "0x%x" % raw
            elif c_type == "int":
                value = to_c_int(raw)
            else:
                value = raw
            out.append((arg_name, c_type, value))
        return out

    @property
    def errno_name(self):
        return syscalls.errno_name(self.ret)

    @property
    def outcome(self):
        """"success", "failure" or "unknown" (the exit was never seen)."""
        if self.ret is None:
            return "unknown"
        return "failure" if self.ret < 0 else "success"


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
