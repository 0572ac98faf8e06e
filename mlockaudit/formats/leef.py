"""Format ``leef``: IBM QRadar's Log Event Extended Format 2.0, attributes separated by
``^`` (named in the header, as LEEF 2.0 allows).

``LEEF:2.0|mlockaudit|mlockaudit|VERSION|mlock2|^|devTime=...^devTimeFormat=...^cat=...``

Why ``^`` and not LEEF 1.0's tab: rsyslog (and other relays) rewrite a tab on receipt as
``#011`` by default, which would break every attribute. LEEF has no escape character, so a
value can never hold the delimiter: in values taken from the traced process the
delimiter ``^``, the header separator ``|`` (which IBM's guide says to avoid in values),
every control character and every byte that is not UTF-8 are shown as U+FFFD, and the
exact bytes are given as hex in ``<key>Hex`` whenever what is shown differs.
"""


from .. import syscalls
from ..compat import time_ns
from .common import (ACTIONS, DEFAULT_SEVERITIES, LEEF_SEVERITY, PRODUCT, VENDOR, VERSION,
                     detection_calls_text, detection_severity, leef_time, safe_text,
                     process_part, surface_text, LINE_ARG_NAMES)

NAME = "leef"
DELIMITER = "^"
UNSAFE = "^|"
TIME_FORMAT = "MMM dd yyyy HH:mm:ss.SSS zzz"


def value(text):
    """A LEEF attribute value -> (shown, hex of the exact bytes or None)."""
    return safe_text(text, UNSAFE)


def render_process(process):
    """(attributes after sev, attributes at the end), cached on the Process."""
    extra = process.extra
    head = []
    tail = []
    for key, number in (("pid", process.pid), ("ppid", process.ppid), ("uid", process.uid),
                        ("euid", extra.get("euid")), ("auid", extra.get("auid"))):
        if number is not None:
            head.append("%s=%d" % (key, number))
    for key, text in (("comm", process.comm), ("exe", process.exe),
                      ("cmdline", extra.get("proctitle")), ("hostName", process.hostname),
                      ("containerId", process.container_id or None)):
        if text is not None:
            shown, raw = value(text)
            head.append("%s=%s" % (key, shown))
            if raw is not None:
                tail.append("%sHex=%s" % (key, raw))
    rendered = ("".join(DELIMITER + part for part in head),
                "".join(DELIMITER + part for part in tail))
    return rendered


# (name, outcome, severity, backend) -> header + constant attributes. The key's values come
# from fixed vocabularies (5 calls, 3 outcomes, 8 severities, 2 backends); bounded anyway.
_HEADS = {}


def _head(key):
    name, outcome, severity, backend, action = key
    head = "LEEF:2.0|%s|%s|%s|%s|%s|" % (VENDOR, PRODUCT, VERSION, name, DELIMITER)
    head += "cat=%s^sev=%d^outcome=%s^syscall=%s^backend=%s" % (
        action, LEEF_SEVERITY[severity], outcome, name, value(str(backend))[0])
    if len(_HEADS) < 256:
        _HEADS[key] = head
    return head


def format_event(event, severities=DEFAULT_SEVERITIES):
    """Event -> one LEEF 2.0 line (no newline)."""
    if event.name == "detection":
        return format_detection(event)
    process = event.process
    rendered = process_part(process, NAME, render_process)
    outcome = event.outcome
    name = event.name
    action = ACTIONS[name] if name != "shmctl" else event.action
    key = (name, outcome, severities[outcome], event.backend, action)
    head = _HEADS.get(key)
    if head is None:
        head = _head(key)
    parts = [head]
    stamp = leef_time(event.timestamp) if event.timestamp is not None else None
    if stamp is not None:
        parts.append("^devTime=%s^devTimeFormat=%s" % (stamp, TIME_FORMAT))
    if event.tid is not None:
        parts.append("^tid=%d" % event.tid)
    parts.append(rendered[0])
    for arg_name, _c_type, arg in event.arg_values():
        if arg is None:
            continue
        parts.append("^%s=%s" % (LINE_ARG_NAMES.get(arg_name, arg_name), arg))
        if arg_name == "flags" and name in ("mlock2", "mlockall"):
            parts.append("^flagNames=" + syscalls.decode_flags(name, arg))
    for key, arg in sorted(event.decoded().items()):
        if isinstance(arg, dict):
            arg = ",".join("%s:%s" % item for item in sorted(arg.items()))
        # (bit names joined by "," here: "|" is LEEF's header separator)
        parts.append("^%s=%s" % (key, "null" if arg is None else
                                 value(str(arg).replace("|", ","))[0]))
    ret = event.ret
    if ret is not None:
        parts.append("^ret=%d" % ret)
        if ret < 0:
            parts.append("^errno=%s" % (syscalls.errno_name(ret) or -ret))
    extra = event.extra
    serial = extra.get("serial")
    if serial.__class__ is int:
        parts.append("^serial=%d" % serial)
    count = extra.get("count")
    if count.__class__ is int:                 # --coalesce (coalesce.py)
        parts.append("^count=%d" % count)
        for key, ns in (("firstTimestamp", extra.get("firstTimestamp")),
                        ("lastTimestamp", extra.get("lastTimestamp"))):
            if ns.__class__ is int:
                parts.append("^%s=%d" % (key, ns))
    parts.append(rendered[1])
    return "".join(parts)


def format_detection(event):
    """A detection (detect.py): EventID the rule's id, ``sev`` the rule's, ``ruleName``
    its title, ``calls`` the triggering calls (name@epoch-ns#serial)."""
    detection = event.extra["detection"]
    rendered = process_part(event.process, NAME, render_process)
    parts = ["LEEF:2.0|%s|%s|%s|%s|%s|" % (VENDOR, PRODUCT, VERSION,
                                           value(detection["id"])[0], DELIMITER)]
    parts.append("cat=detection^sev=%d^ruleId=%s^ruleName=%s^severity=%s" % (
        LEEF_SEVERITY[detection_severity(event)], value(detection["id"])[0],
        value(detection["title"])[0], value(detection["severity"])[0]))
    stamp = leef_time(event.timestamp) if event.timestamp.__class__ is int else None
    if stamp is not None:
        parts.append("^devTime=%s^devTimeFormat=%s" % (stamp, TIME_FORMAT))
    if event.tid is not None:
        parts.append("^tid=%d" % event.tid)
    parts.append(rendered[0])
    parts.append("^calls=" + value(detection_calls_text(detection))[0])
    if "count" in detection:
        parts.append("^count=%d" % detection["count"])
    parts.append(rendered[1])
    return "".join(parts)


def format_stats(stats, severity=6):
    """A heartbeat as a LEEF line (EventID ``stats``), one attribute per counter."""
    attributes = ["devTime=%s" % leef_time(time_ns()), "devTimeFormat=%s" % TIME_FORMAT,
                  "cat=stats", "sev=%d" % LEEF_SEVERITY[severity]]
    for key, number in sorted(stats.items()):
        attributes.append("%s=%s" % (value(str(key))[0], value(str(number))[0]))
    return "LEEF:2.0|%s|%s|%s|stats|%s|%s" % (VENDOR, PRODUCT, VERSION, DELIMITER,
                                               DELIMITER.join(attributes))
