"""Tracee v0.24.1's decoding rules for one JSON event, in Python: what Go's
``json.Unmarshal`` into ``types/trace``'s ``trace.Event`` (its ``Argument.UnmarshalJSON``
included) accepts, plus what Tracee itself prints (key set and order, its argument types
per event in pkg/events/core.go, its event ids in core_amd64.go/core_arm64.go).

:func:`violations` returns what a Tracee v0.24.1 consumer would reject or read wrong in
a line; an empty list means the line is an event Tracee could have printed. Shared by
the offline tests (every capture fixture, events of both backends) and the live ones.
"""

import json
import re
import struct

from mlockaudit.formats.entity_ids import murmur3_32

#: Keys of trace.Event as json.Marshal writes them (struct order; ``metadata`` is
#: omitempty and never set on a printed event), then our one extra key.
KEYS = ("timestamp", "threadStartTime", "processorId", "processId", "cgroupId", "threadId",
        "parentProcessId", "hostProcessId", "hostThreadId", "hostParentProcessId", "userId",
        "mountNamespace", "pidNamespace", "processName", "executable", "hostName",
        "containerId", "container", "kubernetes", "eventId", "eventName", "matchedPolicies",
        "argsNum", "returnValue", "syscall", "stackAddresses", "contextFlags",
        "threadEntityId", "processEntityId", "parentEntityId", "args", "mlockaudit")

INT64 = (-2 ** 63, 2 ** 63 - 1)          # Go's int on amd64 and arm64
UINT64 = (0, 2 ** 64 - 1)
UINT32 = (0, 2 ** 32 - 1)
INT32 = (-2 ** 31, 2 ** 31 - 1)

#: Top-level numbers: Go field type -> range.
NUMBERS = {
    "timestamp": INT64, "threadStartTime": INT64, "processorId": INT64, "processId": INT64,
    "cgroupId": UINT64, "threadId": INT64, "parentProcessId": INT64, "hostProcessId": INT64,
    "hostThreadId": INT64, "hostParentProcessId": INT64, "userId": INT64,
    "mountNamespace": INT64, "pidNamespace": INT64, "argsNum": INT64, "returnValue": INT64,
    "threadEntityId": UINT32, "processEntityId": UINT32, "parentEntityId": UINT32,
}
STRINGS = ("processName", "hostName", "containerId", "eventName", "syscall")

#: Argument.UnmarshalJSON: the type names under which it reads a JSON number, and range.
ARG_RANGES = {
    "trace.Pointer": UINT64, "uint64": UINT64, "uint32": UINT32, "int32": INT32,
    "int64": INT64, "uint16": (0, 2 ** 16 - 1), "int8": (-128, 127), "uint8": (0, 255),
}

#: pkg/events/core.go at v0.24.1: each event's arguments (name, type), in order.
ARGS = {
    "mlock": (("addr", "trace.Pointer"), ("len", "uint64")),
    "mlock2": (("addr", "trace.Pointer"), ("len", "uint64"), ("flags", "int32")),
    "munlock": (("addr", "trace.Pointer"), ("len", "uint64")),
    "mlockall": (("flags", "int32"),),
    "munlockall": (),
    "mmap": (("addr", "trace.Pointer"), ("length", "uint64"), ("prot", "int32"),
             ("flags", "int32"), ("fd", "int32"), ("off", "int64")),
    "shmctl": (("shmid", "int32"), ("cmd", "int32"), ("buf", "trace.Pointer")),
    "setrlimit": (("resource", "int32"), ("rlim", "trace.Pointer")),
    "prlimit64": (("pid", "int32"), ("resource", "int32"), ("new_limit", "trace.Pointer"),
                  ("old_limit", "trace.Pointer")),
}

#: pkg/events/core_amd64.go and core_arm64.go: event ids (a compat caller's event carries
#: the 64-bit id, with contextFlags.isCompat).
EVENT_IDS = {
    "amd64": {"mmap": 9, "shmctl": 31, "mlock": 149, "munlock": 150, "mlockall": 151,
              "munlockall": 152, "setrlimit": 160, "prlimit64": 302, "mlock2": 325},
    "arm64": {"mmap": 222, "shmctl": 195, "mlock": 228, "munlock": 229, "mlockall": 230,
              "munlockall": 231, "setrlimit": 164, "prlimit64": 261, "mlock2": 284},
}
#: mlockaudit.arch -> (Tracee's build, isCompat).
ARCHES = {"x86_64": ("amd64", False), "i386": ("amd64", True),
          "aarch64": ("arm64", False), "arm": ("arm64", True)}

_GO_INT = re.compile(r"-?(0|[1-9][0-9]*)\Z")     # what ``,string`` takes for an int


def hash_task_id(task_id, start_ns):
    """HashTaskID (pkg/datastores/process/taskid.go): written out again from Tracee's
    source, apart from the format's own unrolled copy, so the two check each other."""
    return murmur3_32(struct.pack(">IQ", task_id, start_ns // 100000000 * 100000000))


def _is_int(value):
    return value.__class__ is int          # (json gives bool for true/false: not a number)


def _check_number(problems, where, value, bounds):
    if value is None:
        return
    if not _is_int(value):
        problems.append("%s: %r is not an integer" % (where, value))
    elif not bounds[0] <= value <= bounds[1]:
        problems.append("%s: %d out of range" % (where, value))


def _check_object(problems, where, value, fields):
    """A nested struct: null, or an object of the given string/bool fields."""
    if value is None:
        return
    if not isinstance(value, dict):
        problems.append("%s: not an object" % where)
        return
    for key, item in value.items():
        kind = fields.get(key)
        if kind is None:
            problems.append("%s.%s: not a key Tracee prints" % (where, key))
        elif item is not None and not isinstance(item, kind):
            problems.append("%s.%s: %r is not a %s" % (where, key, item, kind.__name__))


def _no_duplicates(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key in %r" % keys)
    return dict(pairs)


def parse(line):
    """One line -> its object, with duplicate keys refused (Go keeps the last one: a
    duplicate would let a string override a field)."""
    return json.loads(line, object_pairs_hook=_no_duplicates)


def violations(line):
    """What Tracee v0.24.1 would reject or misread in ``line`` (str): [] if nothing."""
    problems = []
    try:
        event = parse(line)
    except ValueError as error:
        return ["not one JSON object: %s" % error]
    if not isinstance(event, dict):
        return ["not a JSON object"]
    if tuple(event) != KEYS:
        problems.append("keys %r are not Tracee's %r" % (list(event), list(KEYS)))
    for key, bounds in NUMBERS.items():
        _check_number(problems, key, event.get(key), bounds)
    for key in STRINGS:
        if event.get(key) is not None and not isinstance(event[key], str):
            problems.append("%s: not a string" % key)
    _check_object(problems, "executable", event.get("executable"), {"path": str})
    _check_object(problems, "container", event.get("container"),
                  {"id": str, "name": str, "image": str, "imageDigest": str})
    _check_object(problems, "kubernetes", event.get("kubernetes"),
                  {"podName": str, "podNamespace": str, "podUID": str, "podSandbox": bool})
    _check_object(problems, "contextFlags", event.get("contextFlags"),
                  {"containerStarted": bool, "isCompat": bool})
    for key, kind in (("matchedPolicies", str), ("stackAddresses", int)):
        items = event.get(key)
        if items is not None and (not isinstance(items, list) or not all(
                isinstance(item, kind) and item.__class__ is not bool for item in items)):
            problems.append("%s: not a list of %s" % (key, kind.__name__))
    if not isinstance(event.get("mlockaudit"), dict):
        problems.append("mlockaudit: not an object")
    name = event.get("eventName")
    if event.get("syscall") != name:
        problems.append("syscall %r is not eventName %r" % (event.get("syscall"), name))
    _check_event_id(problems, event, name)
    _check_args(problems, event, name)
    _check_entity_ids(problems, event)
    return problems


def _check_event_id(problems, event, name):
    """``eventId`` is ``int `json:",string"```: null, or a string holding an int; and
    Tracee's id of that event on the caller's architecture family."""
    event_id = event.get("eventId")
    arch = (event.get("mlockaudit") or {}).get("arch") if isinstance(
        event.get("mlockaudit"), dict) else None
    build, compat = ARCHES.get(arch, (None, None))
    flags = event.get("contextFlags") if isinstance(event.get("contextFlags"), dict) else {}
    if flags.get("isCompat") != compat:
        problems.append("contextFlags.isCompat %r for arch %r" % (flags.get("isCompat"), arch))
    if event_id is None:
        if build is not None and name in EVENT_IDS[build]:
            problems.append("eventId null for %s on %s" % (name, arch))
        return
    if not isinstance(event_id, str) or _GO_INT.match(event_id) is None:
        problems.append("eventId %r is not a quoted integer" % (event_id,))
    elif build is None or int(event_id) != EVENT_IDS[build].get(name):
        problems.append("eventId %s is not Tracee's id of %s on %s" % (event_id, name, arch))


def _check_args(problems, event, name):
    args = event.get("args")
    if not isinstance(args, list):
        problems.append("args: not a list")
        return
    if event.get("argsNum") != len(args):
        problems.append("argsNum %r for %d args" % (event.get("argsNum"), len(args)))
    expected = ARGS.get(name)
    if expected is None:
        problems.append("no Tracee v0.24.1 event %r" % (name,))
    elif [(arg.get("name"), arg.get("type")) for arg in args if isinstance(arg, dict)] \
            != list(expected):
        problems.append("args %r are not Tracee's %r" % (args, expected))
    for position, arg in enumerate(args):
        where = "args[%d]" % position
        if not isinstance(arg, dict) or set(arg) != {"name", "type", "value"}:
            problems.append("%s: not {name, type, value}" % where)
            continue
        kind, value = arg["type"], arg["value"]
        if not isinstance(kind, str) or not isinstance(arg["name"], str):
            problems.append("%s: name and type must be strings" % where)
            continue
        if value is None:
            continue                       # UnmarshalJSON: a null value is taken as is
        if not _is_int(value):
            problems.append("%s: %r is not a JSON integer (%s)" % (where, value, kind))
            continue
        bounds = UINT64 if kind.endswith("*") else ARG_RANGES.get(kind)
        if bounds is None:
            problems.append("%s: unrecognized argument type %s" % (where, kind))
        elif not bounds[0] <= value <= bounds[1]:
            problems.append("%s: %d out of range for %s" % (where, value, kind))


def _check_entity_ids(problems, event):
    """Where the line carries a task's id and start time, its entity id is Tracee's hash
    of them (the process and parent ids' start times are not in the line)."""
    tid, start = event.get("hostThreadId"), event.get("threadStartTime")
    entity = event.get("threadEntityId")
    if _is_int(tid) and _is_int(start) and 0 <= tid <= UINT32[1] and 0 <= start:
        if entity != hash_task_id(tid, start):
            problems.append("threadEntityId %r is not HashTaskID(%d, %d)" % (entity, tid, start))
    elif entity is not None:
        problems.append("threadEntityId %r without hostThreadId and threadStartTime" % entity)
