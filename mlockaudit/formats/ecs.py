"""Format ``ecs``: one JSON document per event in the Elastic Common Schema (8.x).

``event.kind`` event, ``event.category`` ["process"], ``event.type`` ["change"] (the call
changes the process's memory state), ``event.action`` locked-memory (mlock, mlock2,
mlockall) or unlocked-memory (munlock, munlockall), ``event.outcome`` success / failure /
unknown; the calling process under ``process.*``, its ids under ``user.*``, the host under
``host.*``; what ECS has no field for (arguments, flags, errno name, audit ids) under the
custom namespace ``mlockaudit.*``. Unknown values are left out, as ECS prefers.

Like ``tracee``, the output is pure ASCII JSON: no byte of a comm can end the document,
and bytes that are not UTF-8 show as U+FFFD with their exact value in
``mlockaudit.processNameHex`` (``executableHex``, ``commandLineHex``). The process part is
rendered once per Process and cached on it.
"""

from json.encoder import encode_basestring_ascii as _quote

from .. import syscalls
from ..compat import time_ns
from .common import (ACTIONS, DEFAULT_SEVERITIES, detection_severity, iso_utc, process_part,
                     renderable_time)
from .tracee import json_members, json_string, json_value

NAME = "ecs"
ECS_VERSION = "8.11.0"

# Memos of rendered fragments, keyed by values partly chosen by the input: bounded.
_EVENT_HEADS = {}   # (name, outcome, backend, severity) -> '"event":{...'; < 256
_CALLS = {}         # (name, backend, probe, arch, syscall_nr) -> call members; < 256
_ERRNOS = {}        # ret -> (error fragment, errno JSON); < 512


def _id(value):
    """ECS ids are keywords: uid 0 is "0"."""
    return '"%d"' % value


def render_process(process):
    """(``"process":{...`` without its closing brace, the rest of the top level, the
    process's members of ``mlockaudit``, the template of ``"thread"`` that closes it),
    cached on the Process."""
    extra = process.extra
    comm, comm_hex = json_string(process.comm)
    proc = []
    if process.pid is not None:
        proc.append('"pid":%d' % process.pid)
    if process.ns_pid is not None:
        proc.append('"vpid":%d' % process.ns_pid)
    if process.comm is not None:
        proc.append('"name":%s' % comm)
    exe_hex = None
    if process.exe is not None:
        exe, exe_hex = json_string(process.exe)
        proc.append('"executable":%s' % exe)
    title = extra.get("proctitle")
    title_hex = None
    if title is not None:
        shown, title_hex = json_string(title)
        proc.append('"command_line":%s' % shown)
    if extra.get("tty"):
        proc.append('"tty":{"char_device":{"name":%s}}' % json_string(extra["tty"])[0])
    if process.ppid is not None:
        proc.append('"parent":{"pid":%d}' % process.ppid)
    for ecs_key, value in (("user", extra.get("euid")), ("real_user", process.uid),
                           ("saved_user", extra.get("suid")), ("group", extra.get("egid")),
                           ("real_group", extra.get("gid")), ("saved_group", extra.get("sgid"))):
        if value is not None:
            proc.append('"%s":{"id":%s}' % (ecs_key, _id(value)))
    head = '"process":{' + ",".join(proc)

    rest = []
    user = []
    if process.uid is not None:
        user.append('"id":%s' % _id(process.uid))
    if extra.get("euid") is not None:
        user.append('"effective":{"id":%s}' % _id(extra["euid"]))
    if user:
        rest.append('"user":{%s}' % ",".join(user))
    if process.hostname is not None:
        host = json_string(process.hostname)[0]
        rest.append('"host":{"hostname":%s,"name":%s}' % (host, host))
    if process.container_id:
        rest.append('"container":{"id":%s}' % json_string(process.container_id)[0])
    rest = "".join("," + part for part in rest)

    members = json_members({key: value for key, value in extra.items() if key != "proctitle"})
    for key, raw in (("processNameHex", comm_hex), ("executableHex", exe_hex),
                     ("commandLineHex", title_hex)):
        if raw is not None:
            members += ',"%s":"%s"' % (key, raw)
    # the thread id follows the process's members (none: a trace line without tgid whose
    # comm is unknown), so its separator belongs to the process's rendering
    thread = (',' if proc else '') + '"thread":{"id":%d}}'
    rendered = (head, rest, members, thread)
    return rendered


def _event_head(key):
    name, outcome, backend, severity, action = key
    head = ('"event":{"kind":"event","category":["process"],"type":["change"],'
            '"action":"%s","outcome":"%s","code":"%s","provider":%s,"module":"mlockaudit",'
            '"dataset":"mlockaudit.syscall","severity":%d' % (
                action, outcome, name, json_value(backend), severity))
    if len(_EVENT_HEADS) < 256:
        _EVENT_HEADS[key] = head
    return head


def _call_members(key):
    name, backend, probe, arch, syscall_nr = key
    members = ',"backend":%s%s,"arch":%s,"syscallNumber":%s' % (
        json_value(backend), ',"probe":%s' % json_value(probe) if probe else "",
        json_value(arch), json_value(syscall_nr))
    if len(_CALLS) < 256:
        _CALLS[key] = members
    return members


def _args_object(event):
    parts = []
    for arg_name, _c_type, value in event.arg_values():
        parts.append('"%s":%s' % (arg_name, json_value(value)))
    return "{" + ",".join(parts) + "}"


def _span(first, last):
    """``event.start``/``event.end`` of a coalesced summary (coalesce.py): the first and
    last call it stands for; ``mlockaudit.count`` says how many."""
    out = ""
    for key, ns in (("start", first), ("end", last)):
        if renderable_time(ns):
            out += ',"%s":"%s"' % (key, iso_utc(ns, 9))
    return out


def format_event(event, severities=DEFAULT_SEVERITIES):
    """Event -> one ECS JSON document (no newline)."""
    if event.name == "detection":
        return format_detection(event)
    process = event.process
    rendered = process_part(process, NAME, render_process)
    outcome = event.outcome
    name = event.name
    action = ACTIONS[name] if name != "shmctl" else event.action
    key = (name, outcome, event.backend, severities[outcome], action)
    head = _EVENT_HEADS.get(key)
    if head is None:
        head = _event_head(key)
    extra = event.extra
    serial = extra.get("serial")
    call_key = (name, event.backend, event.probe, event.arch, event.syscall_nr)
    call = _CALLS.get(call_key)
    if call is None:
        call = _call_members(call_key)
    ret = event.ret
    if ret is None:
        error, errno_json = "", "null"
    else:
        cached = _ERRNOS.get(ret)
        if cached is None:
            errno = syscalls.errno_name(ret)
            cached = ((',"error":{"code":%s}' % json_value(errno or str(-ret))) if ret < 0 else "",
                      json_value(errno))
            if len(_ERRNOS) < 512:
                _ERRNOS[ret] = cached
        error, errno_json = cached
    flags = event.flags
    decoded = event.decoded()
    flag_names = decoded.pop("flagNames", None) if decoded else \
        syscalls.decode_flags(name, flags)
    stamp = iso_utc(event.timestamp) if event.timestamp is not None else None
    span = ""
    if "firstTimestamp" in extra:              # a --coalesce summary: its calls' span
        extra = dict(extra)
        span = _span(extra.pop("firstTimestamp"), extra.pop("lastTimestamp", None))
    parts = [
        '{"@timestamp":"%s",' % stamp if stamp is not None else "{",
        '"ecs":{"version":"%s"},' % ECS_VERSION,
        head,
        span,
        ',"sequence":%d},' % serial if serial.__class__ is int else "},",
        rendered[0],
        rendered[3] % event.tid if event.tid is not None else "}",
        rendered[1],
        error,
        ',"mlockaudit":{"syscall":"%s","args":%s,"flags":%s,"flagNames":%s,'
        '"returnValue":%s,"errno":%s' % (
            name, _args_object(event), json_value(flags),
            json_value(flag_names), json_value(ret), errno_json),
        call,
    ]
    if decoded:
        parts.append(json_members(decoded))
    if extra:
        parts.append(json_members(extra))
    parts.append(rendered[2])
    parts.append("}}")
    return "".join(parts)


def format_detection(event):
    """A detection (detect.py) -> an ECS alert: ``event.kind`` alert, ``rule.id`` and
    ``rule.name`` from the rule, the triggering process as for a call, and the rule's
    ``id``/``title``/``severity`` with the triggering calls under ``mlockaudit.detection``."""
    detection = event.extra["detection"]
    rendered = process_part(event.process, NAME, render_process)
    stamp = iso_utc(event.timestamp) if renderable_time(event.timestamp) else None
    return "".join((
        '{"@timestamp":"%s",' % stamp if stamp is not None else "{",
        '"ecs":{"version":"%s"},' % ECS_VERSION,
        '"event":{"kind":"alert","category":["process"],"type":["info"],"action":"detection",'
        '"code":%s,"provider":%s,"module":"mlockaudit","dataset":"mlockaudit.detection",'
        '"severity":%d},' % (json_value(detection["id"]), json_value(event.backend),
                             detection_severity(event)),
        '"rule":{"id":%s,"name":%s},' % (json_value(detection["id"]),
                                        json_value(detection["title"])),
        rendered[0],
        rendered[3] % event.tid if event.tid is not None else "}",
        rendered[1],
        ',"mlockaudit":{"backend":%s,"detection":%s' % (json_value(event.backend),
                                                        json_value(detection)),
        rendered[2],
        "}}"))


def format_stats(stats, severity=6):
    """A heartbeat (``stats`` dict: events, lost, backend, queued, ...) as an ECS doc."""
    members = ",".join("%s:%s" % (_quote(str(k)), json_value(v)) for k, v in stats.items())
    return ('{"@timestamp":"%s","ecs":{"version":"%s"},"event":{"kind":"metric",'
            '"category":["process"],"type":["info"],"action":"stats","module":"mlockaudit",'
            '"dataset":"mlockaudit.stats","severity":%d},"mlockaudit":{"stats":{%s}}}' % (
                iso_utc(time_ns()), ECS_VERSION, severity, members))
