"""A completed audit event (SYSCALL + PROCTITLE) -> :class:`~mlockaudit.event.Event`.

What audit tells and what it does not: ``pid=`` is the thread-group id (audit_log_task_info
prints task_tgid_nr), so the thread id is unknown and stays None; pids are as seen from the
initial pid namespace, so the namespaced ids stay None until live enrichment fills them;
``a0..a3`` are the raw registers in hex; ``exit=`` is the signed return value and is absent
when the kernel had no valid return to report.

The process part of a SYSCALL record (``ppid= ... key=``) plus its PROCTITLE is the same
bytes for every call of one process, so :class:`EventBuilder` keeps one
:class:`~mlockaudit.event.Process` per distinct value: a storm from one process parses
and renders its identity once.
"""

from .. import syscalls
from ..event import Event, Process
from .records import decode_string, key_complete, parse_fields, proctitle_state

# A SYSCALL record carries a0..a3 only: mmap's fd and off (a4, a5) stay None.
_NARGS = {"mlock": 2, "mlock2": 3, "munlock": 2, "mlockall": 1, "munlockall": 0,
          "mmap": 4, "shmctl": 3, "setrlimit": 2, "prlimit64": 4}


def head_args(call, head):
    """The call's arguments (Tracee order, None where the record cannot tell) from a
    checked SYSCALL head; i386's ipc(SHMCTL, shmid, cmd, third, ptr) becomes shmctl's
    (shmid, cmd, buf) with buf (ipc's a4) unknown."""
    name, arch, number = call
    values = tuple(int(value, 16) for value in head[4:8])
    if name == "shmctl" and (syscalls.ARCH_AUDIT.get(arch), number) in \
            syscalls.IPC_AUDIT_NUMBERS:
        return (values[1], values[2], None), values
    nargs = _NARGS[name]
    total = len(syscalls.ARG_SPECS[name])
    return values[:nargs] + (None,) * (total - nargs), values


def head_is_locking(call, head):
    """The kernel-side rule predicate, applied to a SYSCALL record (syscalls.LOCKING;
    for ipc(), syscalls.IPC_LOCKING on ipc's own registers)."""
    args, raw = head_args(call, head)
    name, arch, number = call
    if name == "shmctl" and (syscalls.ARCH_AUDIT.get(arch), number) in \
            syscalls.IPC_AUDIT_NUMBERS:
        # as ksys_ipc/ksys_old_shmctl read them: the call in a0's low 16 bits (the rest is
        # the version), cmd an int with IPC_64 stripped
        return raw[0] & 0xFFFF == syscalls.SHMCTL_IPC_CALL and \
            raw[2] & 0xFFFFFFFF & ~syscalls.IPC_64 in (syscalls.SHM_LOCK, syscalls.SHM_UNLOCK)
    return syscalls.is_locking(name, args, arch)

# Extra ids the SYSCALL record carries, in output order: (record key, model key).
_ID_FIELDS = ((b"auid", "auid"), (b"ses", "sessionId"), (b"euid", "euid"), (b"suid", "suid"),
              (b"fsuid", "fsuid"), (b"gid", "gid"), (b"egid", "egid"), (b"sgid", "sgid"),
              (b"fsgid", "fsgid"))


def _int(value):
    """A decimal id as the kernel prints it (``%u``/``%d``), else None. At most 20 digits:
    int() of a huge digit string is slow (quadratic before 3.11) or refused (3.11+)."""
    if value is None or len(value) > 20:
        return None
    digits = value[1:] if value[:1] == b"-" else value
    return int(value) if digits.isdigit() else None


def build_process(fields, proctitle, hostname):
    """SYSCALL process fields (+ raw PROCTITLE value) -> Process."""
    return build_process_checked(fields, proctitle, hostname)[0]


def build_process_checked(fields, proctitle, hostname):
    """SYSCALL process fields (+ raw PROCTITLE value) -> (Process, cut): ``cut`` when the
    record or its PROCTITLE was cut short (records.key_complete, records.proctitle_state),
    which marks the events of this identity incomplete."""
    get = fields.get
    title, title_cut = proctitle_state(proctitle)
    extra = {}
    for record_key, model_key in _ID_FIELDS:
        extra[model_key] = _int(get(record_key))
    tty = get(b"tty")
    extra["tty"] = None if tty in (None, b"(none)") else tty.decode("ascii", "replace")
    extra["proctitle"] = title
    key = decode_string(get(b"key"))
    extra["keys"] = key.split("\x01") if key else []
    subj = get(b"subj")
    if subj is not None and subj != b"?":
        extra["subj"] = subj.decode("utf-8", "replace")
    process = Process(
        pid=_int(get(b"pid")),
        ppid=_int(get(b"ppid")),
        uid=_int(get(b"uid")),
        comm=decode_string(get(b"comm")),
        exe=decode_string(get(b"exe")),
        hostname=hostname.decode("utf-8", "replace") if hostname.__class__ is bytes else hostname,
        extra=extra,
    )
    return process, title_cut or not key_complete(get(b"key"))


class EventBuilder(object):
    """Builds Events from assembled records, sharing one Process per identity.

    Nothing here can fail on input: every value it converts was checked when its record
    was fed (records.split_syscall, records.parse_stamp), so an event that was counted is
    always built and emitted."""

    def __init__(self, hostname=None, max_processes=4096):
        self.hostname = hostname
        # Bounded: one entry per distinct process part (+ PROCTITLE, node) of the input;
        # a storm of distinct identities clears it (4096 x ~1 KB at most), then refills.
        self.max_processes = max_processes
        self._processes = {}
        self._cut = set()        # keys of _processes whose records were cut (same bound)
        self.incomplete = 0      # events marked incomplete here (a cut record)
        self.enrich = None       # live: (process, timestamp) -> process with /proc facts

    def process(self, tail, proctitle, node):
        """The Process for a SYSCALL's process part (bytes, or parsed fields)."""
        return self._process(tail, proctitle, node)[0]

    def _process(self, tail, proctitle, node):
        hostname = node if node is not None else self.hostname
        if tail.__class__ is dict:                     # odd layout: not cacheable
            return build_process_checked(tail, proctitle, hostname)
        key = (tail, proctitle, node)
        process = self._processes.get(key)
        if process is not None:
            return process, key in self._cut
        if len(self._processes) >= self.max_processes:
            self._processes.clear()
            self._cut.clear()
        process, cut = build_process_checked(parse_fields(tail), proctitle, hostname)
        self._processes[key] = process
        if cut:
            self._cut.add(key)
        return process, cut

    def build(self, entry, complete=True):
        """One Event from an assembled entry (assembler._Entry: the SYSCALL head and
        process part from records.split_syscall, the call's name/arch/number, its checked
        timestamp and serial, the raw PROCTITLE value, the node)."""
        _, _, _, exit_value, a0, a1, a2, _ = entry.head
        name = entry.name
        nargs = _NARGS[name]
        if name in syscalls.LOCKING:
            args = head_args((name, entry.arch, entry.number), entry.head)[0]
        elif nargs == 3:
            args = (int(a0, 16), int(a1, 16), int(a2, 16))
        elif nargs == 2:
            args = (int(a0, 16), int(a1, 16))
        elif nargs == 1:
            args = (int(a0, 16),)
        else:
            args = ()
        tail, proctitle, node = entry.tail, entry.proctitle, entry.node
        process = None
        if tail.__class__ is bytes:
            process = self._processes.get((tail, proctitle, node))
        if process is None or self._cut:
            process, cut = self._process(tail, proctitle, node)
            if cut and complete:
                complete = False
                self.incomplete += 1
        serial = entry.serial
        extra = {"serial": serial} if complete else {"serial": serial, "incomplete": True}
        if self.enrich is not None:
            process = self.enrich(process, entry.timestamp)
        return Event(name, "audit", process, entry.timestamp, entry.arch, entry.number, None,
                     None, None, args, int(exit_value) if exit_value is not None else None,
                     extra)
