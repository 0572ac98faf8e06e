"""Format ``tracee``: one JSON object per event, with Tracee's field names, plus one extra
key ``mlockaudit`` for what Tracee does not have.

Written with a template instead of ``json.dumps`` of a nested dict: the per-event path
runs once per call during an audit storm, and only the strings the traced process chooses
need escaping. Strings go through the C-accelerated ``encode_basestring_ascii``, so the
output is pure ASCII: control bytes, quotes, backslashes and U+2028/2029 are all escaped,
and a comm can never end the line or the object early.

Bytes that are not UTF-8 (a comm may hold any byte but NUL) are shown as U+FFFD, as
Tracee's Go encoder shows them, and the exact bytes are kept in ``mlockaudit.<field>Hex``.
"""

from json.encoder import encode_basestring_ascii as _quote

from .. import syscalls


def json_string(text):
    """A surrogateescape str -> (JSON string literal, hex of the raw bytes or None)."""
    if text is None:
        return "null", None
    if text.isascii():
        return _quote(text), None
    try:
        text.encode("utf-8")
        return _quote(text), None
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
        return _quote(raw.decode("utf-8", "replace")), raw.hex()


def json_value(value):
    """JSON for the small set of types the model's ``extra`` holds."""
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


def _num(value):
    return "null" if value is None else "%d" % value


_TEMPLATE = (
    '{"timestamp":%s,"processorId":%s,"processId":%s,"threadId":%s,"parentProcessId":%s,'
    '"hostProcessId":%s,"hostThreadId":%s,"hostParentProcessId":%s,"userId":%s,'
    '"processName":%s,"executable":{"path":%s},"hostName":%s,"containerId":%s,'
    '"eventId":%s,"eventName":"%s","syscall":"%s","returnValue":%s,"argsNum":%d,'
    '"args":[%s],"mlockaudit":{%s}}'
)


def format_event(event):
    """Event -> one line of Tracee-compatible JSON (no trailing newline)."""
    comm, comm_hex = json_string(event.comm)
    exe, exe_hex = json_string(event.exe)
    args = ",".join([
        '{"name":"%s","type":"%s","value":%s}' % (
            name, c_type, ('"%s"' % value) if c_type == "const void*" and value is not None
            else _num(value))
        for name, c_type, value in event.arg_values()])
    native = syscalls.native_number(event.name, event.arch)
    ext = [
        '"backend":"%s"' % event.backend,
        '"arch":%s' % json_value(event.arch),
        '"syscallNumber":%s' % _num(event.syscall_nr),
        '"flags":%s' % json_value(syscalls.decode_flags(event.name, event.flags)),
        '"errno":%s' % json_value(event.errno_name),
    ]
    for key, value in event.extra.items():
        if value.__class__ is str:
            text, raw = json_string(value)
            ext.append('"%s":%s' % (key, text))
            if raw is not None:
                ext.append('"%sHex":"%s"' % (key, raw))
        else:
            ext.append('"%s":%s' % (key, json_value(value)))
    if comm_hex is not None:
        ext.append('"processNameHex":"%s"' % comm_hex)
    if exe_hex is not None:
        ext.append('"executablePathHex":"%s"' % exe_hex)
    return _TEMPLATE % (
        _num(event.timestamp), _num(event.cpu), _num(event.ns_pid), _num(event.ns_tid), _num(event.ns_ppid),
        _num(event.pid), _num(event.tid), _num(event.ppid), _num(event.uid),
        comm, exe, json_string(event.hostname)[0], json_string(event.container_id)[0],
        '"%d"' % native if native is not None else "null", event.name, event.name,
        _num(event.ret), len(event.args), args, ",".join(ext))
