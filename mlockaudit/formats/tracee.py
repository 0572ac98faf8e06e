"""Format ``tracee``: one JSON object per event, as Tracee v0.24.1 prints its events
(``json.Marshal`` of ``types/trace``'s ``trace.Event``): the same keys in the same order,
Tracee's argument type names (``trace.Pointer``, ``uint64``, ``int32``...) and JSON numbers
for every argument, pointers included, so that Tracee's own decoder
(``trace.Argument.UnmarshalJSON``, what its rule engine reads JSON events with) and its
consumers take them unchanged. What a backend does not know is null (Go's decoder takes
null for any field), never a made-up value. Everything Tracee does not have (the pointers
in hex, decoded flags, errno, audit ids...) sits under one extra key, ``mlockaudit``,
which Tracee's decoder ignores.

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
from ..event import FLAGS_POSITION, to_c_int, to_signed64
from .entity_ids import entity_id

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


#: Tracee v0.24.1's type names for the C types of ``syscalls.ARG_SPECS``: its decoder
#: (``trace.Argument.UnmarshalJSON``) reads a number only under one of these (or a C type
#: ending in ``*``) and rejects ``size_t`` and ``int``.
_TRACEE_TYPES = {
    "size_t": "uint64", "unsigned long": "uint64",
    "int": "int32", "pid_t": "int32",
    "off_t": "int64", "long": "int64",
    "unsigned int": "uint32",
}


def tracee_type(c_type):
    """Tracee's type of an argument of C type ``c_type`` (as pkg/events/core.go gives
    them): any pointer is ``trace.Pointer``, an integer the Go type of its width and sign.
    ValueError for a C type with no Tracee counterpart here."""
    if c_type.endswith("*"):
        return "trace.Pointer"
    try:
        return _TRACEE_TYPES[c_type]
    except KeyError:
        raise ValueError("no Tracee type for the C type %r" % (c_type,))


def _unsigned32(value):
    return value & 0xFFFFFFFF


#: Tracee type -> the register value as that type: the JSON number Tracee prints (and its
#: decoder accepts: in range for the type, pointers included, decimal). A 64-bit unsigned
#: type takes the raw value as it is (the model's args are unsigned 64-bit registers).
VALUE_OF = {
    "trace.Pointer": None, "uint64": None, "uint32": _unsigned32,
    "int32": to_c_int, "int64": to_signed64,
}


def _arg_shape(name):
    """(``args`` template with its values as ``%d``, the number of args, (position,
    converter) of the values that are not the raw register as is, positions of the
    pointers, their ``mlockaudit`` hex members as a template)."""
    specs = [(arg, tracee_type(c_type)) for arg, c_type in syscalls.ARG_SPECS[name]]
    template = ",".join('{"name":"%s","type":"%s","value":%%d}' % spec for spec in specs)
    fixes = tuple((at, VALUE_OF[kind]) for at, (_, kind) in enumerate(specs)
                  if VALUE_OF[kind] is not None)
    pointers = tuple(at for at, (_, kind) in enumerate(specs) if kind == "trace.Pointer")
    hex_template = "".join(',"%s":"0x%%x"' % specs[at][0] for at in pointers)
    return template, len(specs), fixes, pointers, hex_template


_ARG_SHAPES = {name: _arg_shape(name) for name in syscalls.ARG_SPECS}
# Memos of rendered fragments. Each is keyed by values the input chooses (flags, return
# values, a capture header's arch) and bounded: a miss only costs rendering the fragment,
# while 1M distinct exit values once grew an unbounded memo to 100 MB.
_CALLS = {}        # (name, arch, backend, probe, syscall_nr) -> fragments; < 256
_FLAG_NAMES = {}   # (name, flags) -> JSON of the decoded flags; < 256
_ERRNO_NAMES = {}  # ret -> JSON of the errno name; < 512 (errno values are < 4096)
_CONSTANTS = {}    # (key, str value) -> ',"key":"value"' for repeated event extras; < 1024
_THREAD_IDS = {}   # (tid, thread start) -> threadEntityId; < 4096, emptied when full
                   # (threads come and go; one that calls again is hashed again)


def render_process(process):
    """The process's share of an event, in the order of Tracee's keys: (processId and
    cgroupId, parent and host ids, the keys from hostParentProcessId to kubernetes, the
    process and parent entity ids, contextFlags.containerStarted, mlockaudit members)."""
    comm, comm_hex = json_string(process.comm)
    exe, exe_hex = json_string(process.exe)
    ext = json_members(process.extra)
    if comm_hex is not None:
        ext += ',"processNameHex":"%s"' % comm_hex
    if exe_hex is not None:
        ext += ',"executablePathHex":"%s"' % exe_hex
    container_id = process.container_id
    # "" is known: not in a container, so in no pod and no container has started
    if container_id == "":
        container, kubernetes, started = "{}", "{}", "false"
    elif container_id is None:
        container, kubernetes, started = "null", "null", "null"
    else:
        container, kubernetes, started = '{"id":%s}' % json_string(container_id)[0], \
            "null", "null"
    rendered = (
        '"processId":%s,"cgroupId":%s' % (_num(process.ns_pid), _num(process.cgroup_id)),
        '"parentProcessId":%s,"hostProcessId":%s' % (_num(process.ns_ppid), _num(process.pid)),
        '"hostParentProcessId":%s,"userId":%s,"mountNamespace":%s,"pidNamespace":%s,'
        '"processName":%s,"executable":{"path":%s},"hostName":%s,"containerId":%s,'
        '"container":%s,"kubernetes":%s' % (
            _num(process.ppid), _num(process.uid), _num(process.mnt_ns), _num(process.pid_ns),
            comm, exe, json_string(process.hostname)[0], json_string(container_id)[0],
            container, kubernetes),
        '"processEntityId":%s,"parentEntityId":%s' % (
            _num(entity_id(process.pid, process.start_time)),
            _num(entity_id(process.ppid, process.parent_start_time))),
        started,
        ext,
    )
    return rendered


def _call_fragments(key):
    name, arch, backend, probe, syscall_nr = key
    native = syscalls.native_number(name, arch)
    fragments = (
        '"eventId":%s,"eventName":"%s","matchedPolicies":null' % (
            '"%d"' % native if native is not None else "null", name),
        '"syscall":"%s","stackAddresses":null' % name,
        "null" if arch is None else "true" if arch in COMPAT_ARCHES else "false",
        '"mlockaudit":{"backend":"%s",%s"arch":%s,"syscallNumber":%s' % (
            backend, '"probe":"%s",' % probe if probe else "", json_value(arch),
            _num(syscall_nr)),
    )
    if len(_CALLS) < 256:
        _CALLS[key] = fragments
    return fragments


#: Callers whose calls Tracee marks ``contextFlags.isCompat``: 32-bit tasks.
COMPAT_ARCHES = frozenset(syscalls.COMPAT_ARCH.values())


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
    change from call to call go (timestamp, threadStartTime, processorId, threadId,
    hostThreadId, returnValue, threadEntityId, args, the pointers' hex, flags, errno,
    event extras): 12 static strings, cached on the Process. Joining them with the values
    is about twice as fast as ``%`` on the whole line, and no string the process chose
    ever becomes part of a format string."""
    rendered = process_part(process, NAME, render_process)
    call = _CALLS.get(call_key)
    if call is None:
        call = _call_fragments(call_key)
    parts = (
        '{"timestamp":',
        ',"threadStartTime":',
        ',"processorId":',
        ',%s,"threadId":' % rendered[0],
        ',%s,"hostThreadId":' % rendered[1],
        ',%s,%s,"argsNum":%d,"returnValue":' % (
            rendered[2], call[0], len(syscalls.ARG_SPECS[call_key[0]])),
        ',%s,"contextFlags":{"containerStarted":%s,"isCompat":%s},"threadEntityId":' % (
            call[1], rendered[4], call[2]),
        ',%s,"args":[' % rendered[3],
        "]," + call[3],
        ',"flags":',
        ',"errno":',
        rendered[5] + "}}",
    )
    process.rendered[call_key[:2]] = parts
    return parts


def format_event(event):
    """Event -> one line of Tracee v0.24.1 JSON (no trailing newline)."""
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
    template, nargs, fixes, pointers, hex_template = _ARG_SHAPES[name]
    args = event.args
    surface = name in syscalls.LOCKING
    if None in args or len(args) != nargs:
        args_json, hex_json, values = _render_args_with_nulls(name, args)
    else:
        if fixes:
            values = list(args)
            for at, convert in fixes:
                values[at] = convert(values[at])
            args_json = template % tuple(values)
        else:
            values = args
            args_json = template % args
        if len(pointers) == 1:
            hex_json = hex_template % values[pointers[0]]
        else:
            hex_json = hex_template % tuple([values[at] for at in pointers])
    position = FLAGS_POSITION.get(name)
    flags = values[position] if position is not None and position < len(values) else None
    flag_key = (name, flags)
    flags_json = _FLAG_NAMES.get(flag_key)
    if surface:
        decoded = event.decoded()
        flags_json = json_value(decoded.pop("flagNames", None)) + json_members(decoded)
    elif flags_json is None:                # flags are the caller's choice: bound the memo
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
    thread_start = event.thread_start
    if thread_start is None or tid is None:
        thread_json = "null"
    else:
        thread_json = _THREAD_IDS.get((tid, thread_start))
        if thread_json is None:
            thread_json = _num(entity_id(tid, thread_start))
            if len(_THREAD_IDS) >= 4096:
                _THREAD_IDS.clear()
            _THREAD_IDS[(tid, thread_start)] = thread_json
    return "".join((
        parts[0], "null" if timestamp is None else str(timestamp),
        parts[1], "null" if thread_start is None else str(thread_start),
        parts[2], "null" if cpu is None else str(cpu),
        parts[3], "null" if ns_tid is None else str(ns_tid),
        parts[4], "null" if tid is None else str(tid),
        parts[5], ret_json,
        parts[6], thread_json,
        parts[7], args_json,
        parts[8], hex_json,
        parts[9], flags_json,
        parts[10], errno_json,
        _event_extra(event.extra) if event.extra else "",
        parts[11]))


def format_detection(event):
    """A detection (detect.py): Tracee's process fields of the triggering process,
    ``eventName`` "detection" (as Tracee names its signatures' findings by event), no
    args, and the rule's id, title, severity and triggering calls in
    ``mlockaudit.detection``."""
    rendered = process_part(event.process, NAME, render_process)
    return "".join((
        '{"timestamp":', _num(event.timestamp), ',"threadStartTime":null,"processorId":null,',
        rendered[0], ',"threadId":', _num(event.ns_tid), ',', rendered[1],
        ',"hostThreadId":', _num(event.tid), ',', rendered[2],
        ',"eventId":null,"eventName":"detection","matchedPolicies":null,"argsNum":0',
        ',"returnValue":null,"syscall":null,"stackAddresses":null',
        ',"contextFlags":{"containerStarted":', rendered[4], ',"isCompat":null}',
        ',"threadEntityId":null,', rendered[3], ',"args":[]',
        ',"mlockaudit":{"backend":', json_value(event.backend),
        ',"detection":', json_value(event.extra["detection"]), rendered[5], '}}'))


def _render_args_with_nulls(name, args):
    """Slow path for calls whose entry was never seen (unknown arguments): (args JSON,
    the pointers' hex members, the values as Tracee types, None where unknown)."""
    parts, hexes, values = [], [], []
    for (arg, c_type), value in zip(syscalls.ARG_SPECS[name], args):
        kind = tracee_type(c_type)
        if value is not None and VALUE_OF[kind] is not None:
            value = VALUE_OF[kind](value)
        values.append(value)
        parts.append('{"name":"%s","type":"%s","value":%s}' % (arg, kind, _num(value)))
        if kind == "trace.Pointer":
            hexes.append(',"%s":%s' % (arg, "null" if value is None else '"0x%x"' % value))
    return ",".join(parts), "".join(hexes), values


def format_stats(stats, severity=6):
    """A heartbeat (events, lost, backend, queued, ...) as one JSON object: Tracee has no
    such event, so it carries ``eventName`` ``stats`` and the counters in
    ``mlockaudit.stats``."""
    from ..compat import time_ns
    return '{"timestamp":%d,"eventName":"stats","mlockaudit":{"stats":%s}}' % (
        time_ns(), json_value(dict(stats)))
