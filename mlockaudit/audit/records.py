"""Audit record text -> fields. Pure functions over bytes, shared by the live netlink source,
the auditd-plugin/log-file inputs and ``replay``.

A record reaches us in one of two shapes:

* from netlink: the message type in the netlink header and a payload
  ``audit(1795713466.498:200019): arch=c000003e syscall=325 ...``;
* from auditd's log (or its plugin stream): ``[node=H ]type=SYSCALL msg=audit(...): ...``,
  optionally followed by ``\\x1d`` and auditd's ENRICHED interpretations, which we drop
  (we interpret the raw values ourselves).

Why the values can be split on spaces: the kernel prints every string the process controls
(comm, exe, proctitle, key, paths) through ``audit_log_untrustedstring``, which emits them
either in double quotes (no space, no quote, no control byte inside) or as hex. So a
process cannot smuggle ``" pid=1"`` into a SYSCALL record. The only values that may hold a
space are LSM labels (AppArmor's ``subj=/usr/bin/x (enforce)``), which the generic parser
glues back onto the previous value.
"""

import re

# The latest time an event can carry (epoch ns in a signed 64-bit integer, as Tracee's,
# i.e. up to 2262-04-11): later stamps (``audit(99999999999999.000:1)``) are no kernel's
# clock and are rejected when the record is fed (parse_stamp).
from ..event import MAX_TIMESTAMP_NS

# Record types (include/uapi/linux/audit.h) that matter here, plus the names auditd writes.
SYSCALL = 1300
PATH = 1302
CONFIG_CHANGE = 1305
EOE = 1320
PROCTITLE = 1327

TYPE_NUMBERS = {
    b"SYSCALL": SYSCALL, b"PATH": PATH, b"IPC": 1303, b"SOCKETCALL": 1304,
    b"CONFIG_CHANGE": CONFIG_CHANGE, b"SOCKADDR": 1306, b"CWD": 1307, b"EXECVE": 1309,
    b"EOE": EOE, b"BPRM_FCAPS": 1321, b"CAPSET": 1322, b"MMAP": 1323,
    b"NETFILTER_PKT": 1324, b"NETFILTER_CFG": 1325, b"SECCOMP": 1326,
    b"PROCTITLE": PROCTITLE,
}


class RecordError(ValueError):
    """A line or payload that is not an audit record. ``reason`` is a short, stable label
    used to count rejections by kind (see the README's replay section for the list)."""

    def __init__(self, reason, detail=""):
        ValueError.__init__(self, "%s%s" % (reason, (": " + detail) if detail else ""))
        self.reason = reason


#: The stamp as audit_log_start() prints it, ``audit(%llu.%03lu:%u): ``, for text records
#: and netlink payloads alike. Widths are bounded (20 digits hold any u64) so that no int()
#: ever sees a huge digit string; the fraction is 3 digits from the kernel, up to 9
#: accepted (parse_stamp reads milliseconds).
STAMP = re.compile(rb"audit\((\d{1,20}\.\d{1,9}:\d{1,20})\): ?")


def split_payload(payload):
    """``audit(SEC.MS:SERIAL): body`` -> (stamp, body); stamp is the bytes ``SEC.MS:SERIAL``.

    The stamp is the kernel's identity of an event within one boot: every record of one
    event carries the same stamp, so it is the key the assembler groups by. Its shape is
    checked here (one anchored match), its value by parse_stamp.
    """
    match = STAMP.match(payload)
    if match is None:
        raise RecordError(_stamp_problem(payload))
    return match.group(1), payload[match.end():]


def _stamp_problem(payload):
    """The reason label for a payload whose stamp does not have the kernel's shape."""
    if not payload.startswith(b"audit("):
        return "no audit( stamp"
    close = payload.find(b")", 6)
    if close < 0:
        return "unterminated stamp"
    if payload[close + 1:close + 2] != b":":
        return "no ':' after stamp"
    return "bad stamp"


def parse_log_line(line):
    """One line of auditd's log -> (type number or name bytes, stamp, body, node).

    Unknown record names stay bytes (``b"USER_ACCT"``); ``type=UNKNOWN[1335]`` becomes 1335.
    Raises RecordError for lines that are not records.
    """
    node = None
    if line.startswith(b"node="):
        space = line.find(b" ")
        if space < 0:
            raise RecordError("node= without record")
        node = line[5:space]
        line = line[space + 1:]
    if not line.startswith(b"type="):
        raise RecordError("no type=")
    space = line.find(b" ", 5)
    if space < 0:
        raise RecordError("no msg=")
    name = line[5:space]
    rtype = TYPE_NUMBERS.get(name)
    if rtype is None:
        if name.startswith(b"UNKNOWN[") and name.endswith(b"]") and name[8:-1].isdigit() \
                and len(name) <= 20:                # (a type is a u16; never a huge int())
            rtype = int(name[8:-1])
        else:
            rtype = name
    if line[space + 1:space + 5] != b"msg=":
        raise RecordError("no msg=")
    stamp, body = split_payload(line[space + 5:])
    enriched = body.find(b"\x1d")
    if enriched >= 0:
        body = body[:enriched]
    return rtype, stamp, body.rstrip(b"\r\n"), node


def parse_stamp(stamp):
    """b"1795713466.498:200019" -> (epoch ns, serial). Raises RecordError ("bad stamp",
    "timestamp out of range": beyond MAX_TIMESTAMP_NS) for what no kernel printed.

    Its shape (digits, bounded widths) is checked where the stamp is cut out of a record
    (split_payload, DATAGRAM_SYSCALL, netlink.split_datagram), so that this conversion,
    once per call on the hot path, stays a few splits."""
    if len(stamp) > 51:                           # 20.9:20 digits: never a huge int()
        raise RecordError("bad stamp", stamp[:40].decode("ascii", "replace"))
    sec, _, rest = stamp.partition(b".")
    msec, _, serial = rest.partition(b":")
    try:
        if len(msec) != 3:                        # the kernel always prints 3 ms digits
            msec = msec.ljust(3, b"0")[:3]
        timestamp = int(sec) * 1000000000 + int(msec) * 1000000
        serial = int(serial)
    except ValueError:                            # a missing part, or not digits
        raise RecordError("bad stamp", stamp[:40].decode("ascii", "replace"))
    if timestamp > MAX_TIMESTAMP_NS or timestamp < 0:
        raise RecordError("timestamp out of range", stamp[:40].decode("ascii", "replace"))
    return timestamp, serial


def parse_fields(body):
    """Generic ``key=value`` parse of a record body -> {bytes: bytes}.

    Values stay raw (quotes and hex included); :func:`decode_string` interprets them.
    A token without ``=`` belongs to the previous value (LSM labels with spaces). A key
    seen twice keeps its first value, as auparse does. Linear in the body: glued tokens
    are collected in lists and joined once (``+=`` on bytes made a million tokens after
    ``subj=`` take a minute).
    """
    fields = {}
    glued = None                     # key -> [first value, token, ...], when any
    last = None
    for token in body.split(b" "):
        if not token:
            continue
        key, eq, value = token.partition(b"=")
        if eq and key:
            if key not in fields:
                fields[key] = value
                last = key
            else:
                last = None
        elif last is not None:
            if glued is None:
                glued = {}
            parts = glued.get(last)
            if parts is None:
                parts = glued[last] = [fields[last]]
            parts.append(token)
    if glued is not None:
        for key, parts in glued.items():
            fields[key] = b" ".join(parts)
    return fields


# The SYSCALL record as audit_log_exit() prints it: the call's own fields first (arch,
# syscall, [per,] success, exit, a0-a3, items), then audit_log_task_info()'s fields about
# the process (ppid= ... comm= exe= [subj=] key=). One match of the call's part replaces
# a dozen splits on the hot path, and the process part is returned untouched: it is the
# same bytes for every call of one process, so callers key a cache on it.
#
# The match also validates what it captures, as the kernel prints it: arch ``%x`` (a u32),
# syscall ``%d``, success ``yes``/``no``, exit ``%ld``, a0-a3 ``%lx`` (at most 16 hex
# digits), so a value int() could not read, or would read wrongly (``a1=1_000``,
# ``a0=-5``), never gets past the record. Exit values of 19 or 20 digits (the edge of a
# signed 64-bit long) and everything else odd take the checked slow path (split_syscall).
_HEAD_PATTERN = (
    rb"arch=([0-9a-fA-F]{1,8}) syscall=(\d{1,10}) (?:per=[0-9a-fA-F]{1,8} )?"
    rb"(?:success=(yes|no) exit=(-?\d{1,18}) )?"
    rb"a0=([0-9a-fA-F]{1,16}) a1=([0-9a-fA-F]{1,16}) a2=([0-9a-fA-F]{1,16}) "
    rb"a3=([0-9a-fA-F]{1,16}) items=\d{1,10} ")
_SYSCALL_HEAD = re.compile(_HEAD_PATTERN)
#: A whole SYSCALL datagram payload (from byte 16 of a netlink message) in one match:
#: the stamp, then the head groups of split_syscall. Used by the live reader.
DATAGRAM_SYSCALL = re.compile(rb"audit\((\d{1,20}\.\d{1,9}:\d{1,20})\): " + _HEAD_PATTERN)
_HEAD_KEYS = (b"arch", b"syscall", b"success", b"exit", b"a0", b"a1", b"a2", b"a3")
_HEX = re.compile(rb"[0-9a-fA-F]+\Z")
_LONG_MIN, _LONG_MAX = -2 ** 63, 2 ** 63 - 1


def split_syscall(body):
    """SYSCALL body -> (head, tail).

    ``head`` is (arch, syscall, success, exit, a0, a1, a2, a3) as bytes (success/exit None
    when the kernel had no return to report). ``tail`` is the process part as raw bytes
    (``ppid=... key=...``), or a dict of parsed fields when the record does not have the
    kernel's layout (hand-edited logs, other kernels): then nothing is cached on it.
    Every value of ``head`` is checked (RecordError "bad hex value", "bad number",
    "number out of range", "bad value"), so that building the event later cannot fail.
    """
    match = _SYSCALL_HEAD.match(body)
    if match is not None:
        return match.groups(), body[match.end():]
    fields = parse_fields(body)
    head = tuple(fields.get(key) for key in _HEAD_KEYS)
    if None in head[:2] or None in head[4:]:
        raise RecordError("SYSCALL without arch/syscall/a0-a3")
    check_head(head)
    return head, fields


def check_head(head):
    """Raise RecordError unless every value of a SYSCALL head is one the kernel prints."""
    arch, syscall, success, exit_value = head[:4]
    _check_hex(arch, 8)
    if not syscall.isdigit():
        raise RecordError("bad number", "syscall")
    if len(syscall) > 10:
        raise RecordError("number out of range", "syscall")
    if (success is None) != (exit_value is None):
        raise RecordError("bad value", "success= and exit= come together")
    if success is not None:
        if success not in (b"yes", b"no", b'"yes"', b'"no"'):   # (quoted: seen in real
            raise RecordError("bad value", "success")             # logs, auparse reads it)
        digits = exit_value[1:] if exit_value[:1] == b"-" else exit_value
        if not digits.isdigit():
            raise RecordError("bad number", "exit")
        if len(digits) > 19 or not _LONG_MIN <= int(exit_value) <= _LONG_MAX:
            raise RecordError("number out of range", "exit")
    for value in head[4:]:
        _check_hex(value, 16)


def _check_hex(value, digits):
    if _HEX.match(value) is None:
        raise RecordError("bad hex value", value[:20].decode("ascii", "replace"))
    if len(value) > digits:
        raise RecordError("number out of range", value[:20].decode("ascii", "replace"))


def parse_syscall(body):
    """SYSCALL record body -> {bytes: bytes} of every field (head and process part)."""
    head, tail = split_syscall(body)
    fields = tail if tail.__class__ is dict else parse_fields(tail)
    for key, value in zip(_HEAD_KEYS, head):
        if value is not None:
            fields.setdefault(key, value)
    return fields


def decode_string(value):
    """An untrusted-string value -> str (surrogateescape), or None when absent.

    ``"text"`` -> text; ``(null)`` and ``?`` -> None; otherwise the value is hex of the raw
    bytes (``6120622D39`` -> ``a b-9``). Odd-length or non-hex input is kept as printed.
    """
    if value is None:
        return None
    if value[:1] == b'"':
        if len(value) >= 2 and value[-1:] == b'"':
            return value[1:-1].decode("utf-8", "surrogateescape")
        return value[1:].decode("utf-8", "surrogateescape")
    if value in (b"(null)", b"?", b"(none)"):
        return None
    try:
        return bytes.fromhex(value.decode("ascii")).decode("utf-8", "surrogateescape")
    except ValueError:
        return value.decode("utf-8", "surrogateescape")


def decode_proctitle(value):
    """PROCTITLE value -> the command line with NULs as spaces (as ``ps`` shows it).

    The kernel cuts it at 128 bytes; a trailing NUL is dropped.
    """
    text = decode_string(value)
    if text is None:
        return None
    return text.rstrip("\0").replace("\0", " ")


def proctitle_state(value):
    """A raw PROCTITLE value -> (command line or None, cut). ``cut`` is True when the value
    is not one the kernel writes whole (quoted ``"..."`` or even-length hex): a record cut
    short (odd-length hex, an unterminated quote) shows what it holds and marks its event
    incomplete; a value that is not hex at all shows nothing (null) and does the same."""
    if value is None:
        return None, False
    value = value.rstrip(b"\x00")          # (a netlink payload may end in NUL padding)
    if value[:1] == b'"':
        return decode_proctitle(value), not (len(value) >= 2 and value[-1:] == b'"')
    if value in (b"(null)", b"?", b"(none)"):
        return None, False
    if _HEX.match(value) is None:
        return None, True
    if len(value) % 2:
        return (decode_proctitle(value[:-1]) if len(value) > 1 else None), True
    return decode_proctitle(value), False


def key_complete(value):
    """True when a SYSCALL's ``key=`` value is whole: the kernel always writes ``key=``
    last (audit_log_exit: audit_log_task_info, then audit_log_key), as ``(null)``, a
    quoted string or even-length hex, so a record without it, or with it cut, was cut
    short (a truncated log line)."""
    if value is None:
        return False
    value = value.rstrip(b"\x00")          # (a netlink payload may end in NUL padding)
    if value == b"(null)":
        return True
    if value[:1] == b'"':
        return len(value) >= 2 and value[-1:] == b'"'
    return bool(value) and len(value) % 2 == 0 and _HEX.match(value) is not None
