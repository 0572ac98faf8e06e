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

from ..event import Event, Process
from .records import decode_proctitle, decode_string, parse_fields, parse_stamp

_NARGS = {"mlock": 2, "mlock2": 3, "munlock": 2, "mlockall": 1, "munlockall": 0}

# Extra ids the SYSCALL record carries, in output order: (record key, model key).
_ID_FIELDS = ((b"auid", "auid"), (b"ses", "sessionId"), (b"euid", "euid"), (b"suid", "suid"),
              (b"fsuid", "fsuid"), (b"gid", "gid"), (b"egid", "egid"), (b"sgid", "sgid"),
              (b"fsgid", "fsgid"))


def _int(value):
    return int(value) if value is not None and value.lstrip(b"-").isdigit() else None


def build_process(fields, proctitle, hostname):
    """SYSCALL process fields (+ raw PROCTITLE value) -> Process."""
    get = fields.get
    extra = {}
    for record_key, model_key in _ID_FIELDS:
        extra[model_key] = _int(get(record_key))
    tty = get(b"tty")
    extra["tty"] = None if tty in (None, b"(none)") else tty.decode("ascii", "replace")
    extra["proctitle"] = decode_proctitle(proctitle)
    key = decode_string(get(b"key"))
    extra["keys"] = key.split("\x01") if key else []
    subj = get(b"subj")
    if subj is not None and subj != b"?":
        extra["subj"] = subj.decode("utf-8", "replace")
    return Process(
        pid=_int(get(b"pid")),
        ppid=_int(get(b"ppid")),
        uid=_int(get(b"uid")),
        comm=decode_string(get(b"comm")),
        exe=decode_string(get(b"exe")),
        hostname=hostname.decode("utf-8", "replace") if hostname.__class__ is bytes else hostname,
        extra=extra,
    )


class EventBuilder(object):
    """Builds Events from assembled records, sharing one Process per identity."""

    def __init__(self, hostname=None, max_processes=4096):
        self.hostname = hostname
        self.max_processes = max_processes
        self._processes = {}

    def process(self, tail, proctitle, node):
        """The Process for a SYSCALL's process part (bytes, or parsed fields)."""
        hostname = node if node is not None else self.hostname
        if tail.__class__ is dict:                     # odd layout: not cacheable
            return build_process(tail, proctitle, hostname)
        key = (tail, proctitle, node)
        process = self._processes.get(key)
        if process is None:
            if len(self._processes) >= self.max_processes:
                self._processes.clear()
            process = build_process(parse_fields(tail), proctitle, hostname)
            self._processes[key] = process
        return process

    def build(self, entry, stamp, complete=True):
        """One Event from an assembled entry (assembler._Entry: the SYSCALL head and
        process part from records.split_syscall, the call's name/arch/number, the raw
        PROCTITLE value, the node)."""
        timestamp, serial = parse_stamp(stamp)
        _, _, _, exit_value, a0, a1, a2, _ = entry.head
        name = entry.name
        nargs = _NARGS[name]
        if nargs == 3:
            args = (int(a0, 16), int(a1, 16), int(a2, 16))
        elif nargs == 2:
            args = (int(a0, 16), int(a1, 16))
        elif nargs == 1:
            args = (int(a0, 16),)
        else:
            args = ()
        extra = {"serial": serial} if complete else {"serial": serial, "incomplete": True}
        tail, proctitle, node = entry.tail, entry.proctitle, entry.node
        process = None
        if tail.__class__ is bytes:
            process = self._processes.get((tail, proctitle, node))
        if process is None:
            process = self.process(tail, proctitle, node)
        return Event(name, "audit", process, timestamp, entry.arch, entry.number, None, None,
                     None, args, int(exit_value) if exit_value is not None else None, extra)
