"""A completed audit event (SYSCALL fields + PROCTITLE) -> :class:`~mlockaudit.event.Event`.

What audit tells and what it does not: ``pid=`` is the thread-group id (audit_log_task_info
prints task_tgid_nr), so the thread id is unknown and stays None; pids are as seen from the
initial pid namespace, so the namespaced ids stay None until live enrichment fills them;
``a0..a3`` are the raw registers in hex; ``exit=`` is the signed return value and is absent
when the kernel had no valid return to report.
"""

from ..event import Event
from ..syscalls import ARG_SPECS
from .records import decode_string, decode_proctitle, parse_stamp

_ARG_KEYS = (b"a0", b"a1", b"a2", b"a3")

# Extra ids the SYSCALL record carries, in output order: (record key, model key).
_ID_FIELDS = ((b"auid", "auid"), (b"ses", "sessionId"), (b"euid", "euid"), (b"suid", "suid"),
              (b"fsuid", "fsuid"), (b"gid", "gid"), (b"egid", "egid"), (b"sgid", "sgid"),
              (b"fsgid", "fsgid"))


def _int(value):
    return int(value) if value is not None and value.lstrip(b"-").isdigit() else None


def build_event(name, arch, fields, stamp, proctitle, hostname, complete=True):
    """Build the Event for one family call. ``fields`` come from records.parse_syscall."""
    get = fields.get
    timestamp, serial = parse_stamp(stamp)
    nargs = len(ARG_SPECS[name])
    args = tuple(int(get(key), 16) if get(key) is not None else None
                 for key in _ARG_KEYS[:nargs])
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
    extra["serial"] = serial
    if not complete:
        extra["incomplete"] = True
    return Event(
        name, "audit",
        timestamp=timestamp,
        arch=arch,
        syscall_nr=_int(get(b"syscall")),
        pid=_int(get(b"pid")),
        ppid=_int(get(b"ppid")),
        uid=_int(get(b"uid")),
        comm=decode_string(get(b"comm")),
        exe=decode_string(get(b"exe")),
        args=args,
        ret=_int(get(b"exit")),
        hostname=hostname.decode("utf-8", "replace") if isinstance(hostname, bytes) else hostname,
        extra=extra,
    )
