"""Format ``tracee``: one JSON object per event, with Tracee's field names, plus one extra
key ``mlockaudit`` for what Tracee does not have.

Written with templates instead of ``json.dumps`` of a nested dict, because this runs once
per call during an audit storm: the process part is rendered once per Process and cached
on it, the call part is one ``%`` on a precompiled template. Strings go through the
C-accelerated ``encode_basestring_ascii``, so the output is pure ASCII: control bytes,
quotes, backslashes and U+2028/2029 are all escaped, and a comm can never end the line or
the object early.

Bytes that are not UTF-8 (a comm may hold any byte but NUL) are shown as U+FFFD, as
Tracee's Go encoder shows them, and the exact bytes are kept in ``mlockaudit.<field>Hex``.
"""

from json.encoder import encode_basestring_ascii as _quote

from .. import syscalls
from ..compat import isascii
from .common import process_part
from ..event import to_c_int

NAME = "tracee"


def json_string(text):
    """A surrogateescape str -> (JSON string literal, hex of the raw bytes or None)."""
    if text is None:
        return "null", None
    if isascii(text):
        return _quote(text), None
    try:
        text.encode("utf-8")
        return _quote(text), None
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
        return _quote(raw.decode("utf-8", "replace")), raw.hex()


def json_value(value):
    """JSON for the small set of types the model's ``extra`` dicts hold."""
    if value is None:
        return "null"
    cls = value.__class__
    if cls is int:
        return "%d" % value
    if cls is str:
        return json_string(value)[0]
    if cls is bool:
        return "true" if value else "false"
    if cls is list or cls is tuple:
        return "[" + ",".join([json_value(item) for item in value]) + "]"
    if cls is dict:
        return "{" + ",".join([_quote(k) + ":" + json_value(v) for k, v in value.items()]) + "}"
    if cls is float:
        return repr(value)
    return _quote(str(value))


def json_members(extra):
    """``,"key":value`` for each item of an extra dict; str values that are not UTF-8 get
    a ``<key>Hex`` companion with their exact bytes."""
    parts = []
    for key, value in extra.items():
        if value.__class__ is str:
            text, raw = json_string(value)
            parts.append(',"%s":%s' % (key, text))
            if raw is not None:
                parts.append(',"%sHex":"%s"' % (key, raw))
        else:
            parts.append(',"%s":%s' % (key, json_value(value)))
    return "".join(parts)


def _num(value):
    return "null" if value is None else "%d" % value


def render_process(process):
    """The process's share of an event: (processId, parent+host ids, the rest, ext)."""
    comm, comm_hex = json_string(process.comm)
    exe, exe_hex = json_string(process.exe)
    ext = json_members(process.extra)
    if comm_hex is not None:
        ext += ',"processNameHex":"%s"' % comm_hex
    if exe_hex is not None:
        ext += ',"executablePathHex":"%s"' % exe_hex
    rendered = (
        _num(process.ns_pid),
        '"parentProcessId":%s,"hostProcessId":%s' % (_num(process.ns_ppid), _num(process.pid)),
        '"hostParentProcessId":%s,"userId":%s,"processName":%s,"executable":{"path":%s},'
        '"hostName":%s,"containerId":%s' % (
            _num(process.ppid), _num(process.uid), comm, exe, json_string(process.hostname)[0],
            json_string(process.container_id)[0]),
        ext,
    )
    return rendered


def _args_template(name):
    """The ``args`` array of one call with its values left as ``%`` fields."""
    return ",".join('{"name":"%s","type":"%s","value":%s}' % (
        arg, c_type, '"0x%x"' if c_type == "const void*" else "%d")
        for arg, c_type in syscalls.ARG_SPECS[name])


_ARGS_TEMPLATES = {name: _args_template(name) for name in syscalls.FAMILY}
# Memos of rendered fragments. Each is keyed by values the input chooses (flags, return
# values, a capture header's arch) and bounded: a miss only costs rendering the fragment,
# while 1M distinct exit values once grew an unbounded memo to 100 MB.
_CALLS = {}        # (name, arch, backend, probe, syscall_nr) -> fragments; < 256
_FLAG_NAMES = {}   # (name, flags) -> JSON of the decoded flags; < 256
_ERRNO_NAMES = {}  # ret -> JSON of the errno name; < 512 (errno values are < 4096)
_CONSTANTS = {}    # (key, str value) -> ',"key":"value"' for repeated event extras; < 1024


def _call_fragments(key):
    name, arch, backend, probe, syscall_nr = key
    native = syscalls.native_number(name, arch)
    fragments = (
        '"eventId":%s,"eventName":"%s","syscall":"%s"' % (
            '"%d"' % native if native is not None else "null", name, name),
        '"mlockaudit":{"backend":"%s",%s"arch":%s,"syscallNumber":%s' % (
            backend, '"probe":"%s",' % probe if probe else "", json_value(arch),
            _num(syscall_nr)),
    )
    if len(_CALLS) < 256:
        _CALLS[key] = fragments
    return fragments


def _event_extra(extra):
    """Event extras: small dicts of ints, bools and a few repeated strings."""
    if len(extra) == 1:                      # the common case: audit's serial alone
        for key, value in extra.items():
            if value.__class__ is int:
                return ',"%s":%d' % (key, value)
    out = []
    for key, value in extra.items():
        cls = value.__class__
        if cls is int:
            out.append(',"%s":%d' % (key, value))
        elif cls is bool:
            out.append(',"%s":%s' % (key, "true" if value else "false"))
        elif cls is str:
            member = _CONSTANTS.get((key, value))
            if member is None:
                member = json_members({key: value})
                if len(_CONSTANTS) < 1024:
                    _CONSTANTS[(key, value)] = member
            out.append(member)
        else:
            out.append(json_members({key: value}))
    return "".join(out)


def _line_parts(process, call_key):
    """The whole line for one process and one kind of call, cut where the values that
    change from call to call go (timestamp, processorId, threadId, hostThreadId,
    returnValue, args, flags, errno, event extras): 9 static strings, cached on the
    Process. Joining them with the values is about twice as fast as ``%`` on the whole
    line, and no string the process chose ever becomes part of a format string."""
    rendered = process_part(process, NAME, render_process)
    call = _CALLS.get(call_key)
    if call is None:
        call = _call_fragments(call_key)
    parts = (
        '{"timestamp":',
        ',"processorId":',
        ',"processId":%s,"threadId":' % rendered[0],
        ',%s,"hostThreadId":' % rendered[1],
        ',%s,%s,"returnValue":' % (rendered[2], call[0]),
        ',"argsNum":%d,"args":[' % len(syscalls.ARG_SPECS[call_key[0]]),
        '],%s,"flags":' % call[1],
        ',"errno":',
        rendered[3] + "}}",
    )
    process.rendered[call_key[:2]] = parts
    return parts


def format_event(event):
    """Event -> one line of Tracee-compatible JSON (no trailing newline)."""
    process = event.process
    name = event.name
    if name == "detection":
        return format_detection(event)
    # Per Process, (name, arch) decides the rest of the call's fragment: a Process belongs
    # to one backend and probe kind, and the number follows from name and arch.
    parts = process.rendered.get((name, event.arch))
    if parts is None:
        parts = _line_parts(process, (name, event.arch, event.backend, event.probe,
                                      event.syscall_nr))
    args = event.args
    if None in args:
        args_json = _render_args_with_nulls(name, args)
        flags = None
    elif name == "mlock2":
        flags = to_c_int(args[2])
        args_json = _ARGS_TEMPLATES[name] % (args[0], args[1], flags)
    elif name == "mlockall":
        flags = to_c_int(args[0])
        args_json = _ARGS_TEMPLATES[name] % flags
    else:
        flags = None
        args_json = _ARGS_TEMPLATES[name] % args
    flag_key = (name, flags)
    flags_json = _FLAG_NAMES.get(flag_key)
    if flags_json is None:                  # flags are the caller's choice: bound the memo
        flags_json = json_value(syscalls.decode_flags(name, flags))
        if len(_FLAG_NAMES) < 256:
            _FLAG_NAMES[flag_key] = flags_json
    ret = event.ret
    if ret is None:
        ret_json = errno_json = "null"
    else:
        ret_json = str(ret)
        if ret >= 0:
            errno_json = "null"
        else:
            errno_json = _ERRNO_NAMES.get(ret)
            if errno_json is None:
                errno_json = json_value(syscalls.errno_name(ret))
                if len(_ERRNO_NAMES) < 512:
                    _ERRNO_NAMES[ret] = errno_json
    timestamp, cpu, tid, ns_tid = event.timestamp, event.cpu, event.tid, event.ns_tid
    return "".join((
        parts[0], "null" if timestamp is None else str(timestamp),
        parts[1], "null" if cpu is None else str(cpu),
        parts[2], "null" if ns_tid is None else str(ns_tid),
        parts[3], "null" if tid is None else str(tid),
        parts[4], ret_json,
        parts[5], args_json,
        parts[6], flags_json,
        parts[7], errno_json,
        _event_extra(event.extra) if event.extra else "",
        parts[8]))


def format_detection(event):
    """A detection (detect.py): Tracee's process fields of the triggering process,
    ``eventName`` "detection" (as Tracee names its signatures' findings by event), no
    args, and the rule's id, title, severity and triggering calls in
    ``mlockaudit.detection``."""
    rendered = process_part(event.process, NAME, render_process)
    return "".join((
        '{"timestamp":', _num(event.timestamp),
        ',"processId":', rendered[0], ',"threadId":', _num(event.ns_tid), ',', rendered[1],
        ',"hostThreadId":', _num(event.tid), ',', rendered[2],
        ',"eventId":null,"eventName":"detection","argsNum":0,"args":[]',
        ',"mlockaudit":{"backend":', json_value(event.backend),
        ',"detection":', json_value(event.extra["detection"]), rendered[3], '}}'))


def _render_args_with_nulls(name, args):
    """Slow path for calls whose entry was never seen (unknown arguments)."""
    parts = []
    for (arg, c_type), value in zip(syscalls.ARG_SPECS[name], args):
        if value is None:
            shown = "null"
        elif c_type == "const void*":
            shown = '"0x%x"' % value
        elif c_type == "int":
            shown = "%d" % to_c_int(value)
        else:
            shown = "%d" % value
        parts.append('{"name":"%s","type":"%s","value":%s}' % (arg, c_type, shown))
    return ",".join(parts)


def format_stats(stats, severity=6):
    """A heartbeat (events, lost, backend, queued, ...) as one JSON object: Tracee has no
    such event, so it carries ``eventName`` ``stats`` and the counters in
    ``mlockaudit.stats``."""
    from ..compat import time_ns
    return '{"timestamp":%d,"eventName":"stats","mlockaudit":{"stats":%s}}' % (
        time_ns(), json_value(dict(stats)))
