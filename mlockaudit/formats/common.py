"""What the SIEM formats (ecs, cef, leef) and the syslog framing share: the action and
outcome vocabulary, severities, timestamps, and making process-chosen strings safe.

Strings chosen by the traced process (comm, exe, proctitle) arrive as surrogateescape
``str`` and may hold any byte but NUL. For the text formats (CEF, LEEF, RFC 5424 SD),
:func:`safe_text` turns such a string into something that can never end a message or
start a field: bytes that are not UTF-8 and every control character become U+FFFD; the
exact bytes are returned as hex whenever what is shown differs from them, so nothing is
lost. Each format then applies its own escaping on top (CEF ``\\=``, SD ``\\]``...).
"""

import time

from .. import __version__, syscalls
from ..compat import isascii
from ..event import MAX_TIMESTAMP_NS

VENDOR = "mlockaudit"
PRODUCT = "mlockaudit"
VERSION = __version__

#: ECS event.action / CEF act / LEEF action, per call: the issue's vocabulary.
ACTIONS = {
    "mlock": "locked-memory",
    "mlock2": "locked-memory",
    "mlockall": "locked-memory",
    "munlock": "unlocked-memory",
    "munlockall": "unlocked-memory",
    "mmap": "locked-memory",                 # (only MAP_LOCKED ones are reported)
    "setrlimit": "changed-memlock-limit",
    "prlimit64": "changed-memlock-limit",
}
#: shmctl's action follows its command: SHM_LOCK locks, SHM_UNLOCK unlocks (syscalls.action).
SHMCTL_ACTIONS = ("locked-memory", "unlocked-memory")


#: Argument names that would read as the caller's own fields in the line formats (LEEF
#: attributes, CEF msg): prlimit64's target ``pid`` is not the calling process.
LINE_ARG_NAMES = {"pid": "targetPid"}


def surface_text(event):
    """The arguments and decoded facts of a surface call beyond the family, as one
    ``name=value`` text (``addr=0x7f.. length=8192 ... flagNames=MAP_PRIVATE|MAP_LOCKED
    lockedLength=8192``) for the line formats (CEF msg, syslog); "" for the family.
    Every value is a number or a name from our own tables: nothing the process chose."""
    if event.name not in syscalls.LOCKING:
        return ""
    parts = ["%s=%s" % (LINE_ARG_NAMES.get(name, name), "null" if value is None else value)
             for name, _, value in event.arg_values()]
    for key, value in sorted(event.decoded().items()):
        if isinstance(value, dict):
            value = ",".join("%s:%s" % item for item in sorted(value.items()))
        parts.append("%s=%s" % (key, "null" if value is None else value))
    return " ".join(parts)

#: Syslog severities (RFC 5424 numeric): 0 emerg .. 7 debug.

#: Default syslog severity per outcome: a successful lock is routine (info); a failed one
#: (EPERM over RLIMIT_MEMLOCK, ENOMEM, EINVAL) is worth a look (warning); a call whose exit
#: was never seen is reported like a failure.
DEFAULT_SEVERITIES = {"success": 6, "failure": 4, "unknown": 4}

#: Syslog severity -> CEF severity (0..10, 10 the worst) and LEEF sev (1..10).
CEF_SEVERITY = (10, 9, 8, 7, 5, 3, 1, 0)
LEEF_SEVERITY = (10, 9, 8, 7, 5, 3, 1, 1)

#: A detection's severity (rules/detections.toml; Sigma's level words) -> syslog severity.
DETECTION_SEVERITIES = {"informational": 6, "low": 5, "medium": 4, "high": 3, "critical": 2}


def detection_severity(event):
    """The syslog severity of a detection Event (detect.py): its rule's."""
    return DETECTION_SEVERITIES.get(event.extra["detection"]["severity"], 4)


def detection_calls_text(detection):
    """``setrlimit@1700000000123456789#812,mlock2@...`` : the triggering calls (name, epoch
    ns, audit serial when known) as one plain value for the text formats."""
    parts = []
    for call in detection["calls"]:
        text = "%s@%s" % (call["name"], "-" if call.get("timestamp") is None
                          else call["timestamp"])
        if call.get("serial") is not None:
            text += "#%d" % call["serial"]
        parts.append(text)
    return ",".join(parts)


REPLACEMENT = "\ufffd"

# Every C0 control, DEL, the C1 controls and the Unicode line/paragraph separators.
_CONTROLS = [chr(c) for c in range(0x20)] + [chr(0x7F)] + [chr(c) for c in range(0x80, 0xA0)] \
    + ["\u2028", "\u2029"]
_REPLACE_CONTROLS = {ord(c): REPLACEMENT for c in _CONTROLS}


def severities(success=None, failure=None, unknown=None):
    """A severity map (outcome -> syslog severity 0..7) with defaults filled in. The
    unknown outcome follows failure unless given."""
    result = dict(DEFAULT_SEVERITIES)
    if success is not None:
        result["success"] = success
    if failure is not None:
        result["failure"] = failure
        if unknown is None:
            result["unknown"] = failure
    if unknown is not None:
        result["unknown"] = unknown
    for outcome, value in result.items():
        if value.__class__ is not int or not 0 <= value <= 7:
            raise ValueError("syslog severity for %s must be 0..7, not %r" % (outcome, value))
    return result


def raw_bytes(text):
    """The exact bytes of a surrogateescape str."""
    return text.encode("utf-8", "surrogateescape")


def safe_text(text, extra_unsafe=""):
    """surrogateescape str -> (shown str, hex of the exact bytes or None).

    ``shown`` holds no control character, no U+2028/2029, no character of
    ``extra_unsafe`` (a format's delimiters that have no escape) and no lone surrogate:
    each is U+FFFD. The hex is given only when ``shown`` is not the exact text."""
    if isascii(text) and text.isprintable():
        for char in extra_unsafe:
            if char in text:
                break
        else:
            return text, None
    try:
        text.encode("utf-8")
        shown = text
    except UnicodeEncodeError:
        shown = raw_bytes(text).decode("utf-8", "replace")
    shown = shown.translate(_REPLACE_CONTROLS)
    for char in extra_unsafe:
        if char in shown:
            shown = shown.replace(char, REPLACEMENT)
    if shown == text:
        return shown, None
    return shown, raw_bytes(text).hex()


def utf8_cut(data, limit):
    """bytes cut to at most ``limit`` bytes without splitting a UTF-8 character."""
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and (data[end] & 0xC0) == 0x80:
        end -= 1
    return data[:end]


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_second_cache = {}


def _utc_second(seconds):
    text = _second_cache.get(seconds)
    if text is None:
        if len(_second_cache) > 64:
            _second_cache.clear()
        text = _second_cache[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return text


def renderable_time(ns):
    """True for an epoch-ns int every format can show (1970 to 2262, the Event model's
    range); the formatters leave out (or, in syslog framing, replace) any other value,
    so that no timestamp can make them fail."""
    return ns.__class__ is int and 0 <= ns <= MAX_TIMESTAMP_NS


def iso_utc(ns, digits=6):
    """Epoch ns -> ``2026-11-27T12:26:07.667000Z`` (``digits`` fraction digits: 6 for RFC
    5424's TIME-SECFRAC, 9 for ECS's date_nanos); None for a time that cannot be shown
    (see renderable_time)."""
    if not 0 <= ns <= MAX_TIMESTAMP_NS:
        return None
    seconds, fraction = divmod(ns, 1000000000)
    if digits == 9:
        return "%s.%09dZ" % (_utc_second(seconds), fraction)
    if digits == 3:
        return "%s.%03dZ" % (_utc_second(seconds), fraction // 1000000)
    return "%s.%06dZ" % (_utc_second(seconds), fraction // 1000)


def leef_time(ns):
    """Epoch ns -> LEEF's default devTime form ``Nov 27 2026 12:26:07.667 UTC``; None for a
    time that cannot be shown (see renderable_time)."""
    if not 0 <= ns <= MAX_TIMESTAMP_NS:
        return None
    seconds, fraction = divmod(ns, 1000000000)
    tm = time.gmtime(seconds)
    return "%s %02d %04d %02d:%02d:%02d.%03d UTC" % (
        _MONTHS[tm.tm_mon - 1], tm.tm_mday, tm.tm_year, tm.tm_hour, tm.tm_min, tm.tm_sec,
        fraction // 1000000)


def local_syslog_time(seconds):
    """``Mmm dd hh:mm:ss`` in local time, as syslog(3) writes it (C-locale month). A time
    that cannot be shown is replaced by now (syslog(3) always writes the current time)."""
    if not 0 <= seconds <= MAX_TIMESTAMP_NS // 1000000000:
        seconds = time.time()
    tm = time.localtime(seconds)
    return "%s %2d %02d:%02d:%02d" % (_MONTHS[tm.tm_mon - 1], tm.tm_mday, tm.tm_hour,
                                      tm.tm_min, tm.tm_sec)


def event_name_text(name, ret):
    """``mlock2 succeeded`` / ``mlock2 failed: EINVAL`` / ``mlock2 (exit not seen)``."""
    if ret is None:
        return "%s (exit not seen)" % name
    if ret >= 0:
        return "%s succeeded" % name
    return "%s failed: %s" % (name, syscalls.errno_name(ret) or ret)


def process_part(process, format_name, render):
    """What a format renders of a Process, made once and cached on it (Process.rendered):
    every call of one process shares it."""
    rendered = process.rendered.get(format_name)
    if rendered is None:
        rendered = render(process)
        process.rendered[format_name] = rendered
    return rendered
