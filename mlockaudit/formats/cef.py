"""Format ``cef``: ArcSight Common Event Format, version 0.

``CEF:0|mlockaudit|mlockaudit|VERSION|mlock2|mlock2 succeeded|SEV|rt=... dvchost=... ...``

The header's Device Event Class ID is the call's name and Name says how it ended; the
severity is the syslog severity of the outcome mapped to CEF's 0..10. The extension uses
CEF's own keys where they exist (``rt`` ms since the epoch, ``dvchost``, ``act``,
``outcome``, ``spid`` the traced pid, ``sproc`` its comm, ``suid`` its uid, ``externalId``
the audit serial) and labelled custom fields for the rest (``cs1`` addr, ``cn1`` len,
``cn2`` flags, ``cs2`` flag names, ``cn3`` return value, ``cs3`` errno, ``cs4``
executable, ``cs5`` command line, ``cs6`` auid, ``flexNumber1`` tid, ``flexNumber2`` ppid,
``flexString1`` the comm's exact bytes as hex and ``flexString2`` the executable's, given
only when they differ from what is shown). A field whose value is unknown is left out
with its label.

Escaping follows the CEF rules so that a process-chosen string can never add a field or
a header column: in the header ``\\`` and ``|`` are escaped; in extension values ``\\``,
``=``, newline (``\\n``) and carriage return (``\\r``) are; every other control
character and every byte that is not UTF-8 is shown as U+FFFD (with the hex field keeping
the exact bytes).
"""


from .. import syscalls
from ..compat import time_ns
from ..event import MAX_TIMESTAMP_NS
from .common import (ACTIONS, CEF_SEVERITY, DEFAULT_SEVERITIES, PRODUCT, VENDOR, VERSION,
                     detection_calls_text, detection_severity, event_name_text, raw_bytes,
                     safe_text, process_part, surface_text)

NAME = "cef"

_EXT_ESCAPES = str.maketrans({"\\": "\\\\", "=": "\\=", "\n": "\\n", "\r": "\\r"})
_HEADER_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|"})


def header_value(text):
    """A CEF header column: ``\\`` and ``|`` escaped, controls as U+FFFD."""
    return safe_text(text)[0].translate(_HEADER_ESCAPES)


def ext_value(text):
    """An extension value -> (escaped value, hex of the exact bytes or None). The hex is
    given when what is shown is not the exact text (bytes that are not UTF-8, controls
    other than newline and carriage return)."""
    shown = safe_text(text.translate(_EXT_ESCAPES))[0]
    lossy = safe_text(text.replace("\n", " ").replace("\r", " "))[1] is not None
    return shown, (raw_bytes(text).hex() if lossy else None)


def render_process(process):
    """(extension members that follow ``outcome``, members at the end), cached."""
    extra = process.extra
    head = []
    tail = []
    if process.hostname is not None:
        head.append("dvchost=" + ext_value(process.hostname)[0])
    if process.pid is not None:
        head.append("spid=%d" % process.pid)
    comm_hex = exe_hex = None
    if process.comm is not None:
        shown, comm_hex = ext_value(process.comm)
        head.append("sproc=" + shown)
    if process.uid is not None:
        head.append("suid=%d" % process.uid)
    if process.exe is not None:
        shown, exe_hex = ext_value(process.exe)
        tail.append("cs4Label=executable cs4=" + shown)
    if extra.get("proctitle") is not None:
        tail.append("cs5Label=commandLine cs5=" + ext_value(extra["proctitle"])[0])
    if extra.get("auid") is not None:
        tail.append("cs6Label=auid cs6=%d" % extra["auid"])
    if process.ppid is not None:
        tail.append("flexNumber2Label=ppid flexNumber2=%d" % process.ppid)
    if comm_hex is not None:
        tail.append("flexString1Label=sprocHex flexString1=" + comm_hex)
    if exe_hex is not None:
        tail.append("flexString2Label=executableHex flexString2=" + exe_hex)
    rendered = ("".join(" " + part for part in head), "".join(" " + part for part in tail))
    return rendered


# (name, ret or 0 or None, severity) -> header up to and including the last |. Keyed by the
# return value of failures, which the input chooses: bounded (1024 headers).
_HEADERS = {}


def _header(key):
    name, ret, severity = key
    header = "CEF:0|%s|%s|%s|%s|%s|%d|" % (
        header_value(VENDOR), header_value(PRODUCT), header_value(VERSION), name,
        header_value(event_name_text(name, ret)), CEF_SEVERITY[severity])
    if len(_HEADERS) < 1024:
        _HEADERS[key] = header
    return header


def format_event(event, severities=DEFAULT_SEVERITIES):
    """Event -> one CEF line (no newline)."""
    if event.name == "detection":
        return format_detection(event)
    process = event.process
    rendered = process_part(process, NAME, render_process)
    outcome = event.outcome
    name = event.name
    ret = event.ret
    key = (name, ret if outcome == "failure" else 0 if outcome == "success" else None,
           severities[outcome])
    header = _HEADERS.get(key)
    if header is None:
        header = _header(key)
    parts = [header]
    timestamp = event.timestamp
    if timestamp is not None and 0 <= timestamp <= MAX_TIMESTAMP_NS:
        parts.append("rt=%d " % (timestamp // 1000000))
    parts.append("act=%s outcome=%s" % (ACTIONS[name] if name != "shmctl" else event.action,
                                        outcome))
    parts.append(rendered[0])
    surface = surface_text(event)
    if surface:
        parts.append(" msg=" + ext_value(surface)[0])
    for arg_name, _c_type, value in (event.arg_values() if not surface else ()):
        if value is None:
            continue
        if arg_name == "addr":
            parts.append(" cs1Label=addr cs1=" + value)
        elif arg_name == "len":
            parts.append(" cn1Label=len cn1=%d" % value)
        elif arg_name == "flags":
            parts.append(" cn2Label=flags cn2=%d" % value)
            parts.append(" cs2Label=flagNames cs2=" + syscalls.decode_flags(name, value))
    if ret is not None:
        parts.append(" cn3Label=returnValue cn3=%d" % ret)
        if ret < 0:
            parts.append(" cs3Label=errno cs3=%s" % (syscalls.errno_name(ret) or -ret))
    if event.tid is not None:
        parts.append(" flexNumber1Label=tid flexNumber1=%d" % event.tid)
    extra = event.extra
    serial = extra.get("serial")
    if serial.__class__ is int:
        parts.append(" externalId=%d" % serial)
    count = extra.get("count")
    if count.__class__ is int:                 # --coalesce (coalesce.py): CEF's own keys
        parts.append(" cnt=%d" % count)
        for key, ns in (("start", extra.get("firstTimestamp")),
                        ("end", extra.get("lastTimestamp"))):
            if ns.__class__ is int and 0 <= ns <= MAX_TIMESTAMP_NS:
                parts.append(" %s=%d" % (key, ns // 1000000))
    parts.append(rendered[1])
    return "".join(parts)


def format_detection(event):
    """A detection (detect.py): Device Event Class ID the rule's id, Name its title,
    severity the rule's; the triggering process as for a call; ``cs1`` the rule id,
    ``cs2`` the triggering calls (name@epoch-ns#serial, see common.detection_calls_text),
    ``cs3`` the rule's severity word."""
    detection = event.extra["detection"]
    rendered = process_part(event.process, NAME, render_process)
    parts = ["CEF:0|%s|%s|%s|%s|%s|%d|" % (
        header_value(VENDOR), header_value(PRODUCT), header_value(VERSION),
        header_value(detection["id"]), header_value(detection["title"]),
        CEF_SEVERITY[detection_severity(event)])]
    timestamp = event.timestamp
    if timestamp.__class__ is int and 0 <= timestamp <= MAX_TIMESTAMP_NS:
        parts.append("rt=%d " % (timestamp // 1000000))
    parts.append("act=detection cat=detection")
    parts.append(rendered[0])
    parts.append(" cs1Label=rule cs1=" + ext_value(detection["id"])[0])
    parts.append(" cs2Label=calls cs2=" + ext_value(detection_calls_text(detection))[0])
    parts.append(" cs3Label=severity cs3=" + ext_value(detection["severity"])[0])
    parts.append(" cnt=%d" % len(detection["calls"]) if "count" not in detection
                 else " cnt=%d" % detection["count"])
    if event.tid is not None:
        parts.append(" flexNumber1Label=tid flexNumber1=%d" % event.tid)
    parts.append(rendered[1])
    return "".join(parts)


def format_stats(stats, severity=6):
    """A heartbeat as a CEF line (Device Event Class ID ``stats``): events, lost and the
    queue depth in cn1..cn3, the backend in cs1, every counter as ``key:value,...`` in cs2."""
    fields = ["rt=%d" % (time_ns() // 1000000), "act=stats"]
    for index, key in enumerate(("events", "lost", "queued")):
        if stats.get(key) is not None:
            fields.append("cn%dLabel=%s cn%d=%d" % (index + 1, key, index + 1, stats[key]))
    if stats.get("backend") is not None:
        fields.append("cs1Label=backend cs1=" + ext_value(str(stats["backend"]))[0])
    fields.append("cs2Label=stats cs2=" + ext_value(",".join(
        "%s:%s" % item for item in sorted(stats.items())))[0])
    return "CEF:0|%s|%s|%s|stats|mlockaudit statistics|%d|%s" % (
        VENDOR, PRODUCT, VERSION, CEF_SEVERITY[severity], " ".join(fields))
