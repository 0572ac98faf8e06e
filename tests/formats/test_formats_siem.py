"""The SIEM formats (ecs, cef, leef) and the syslog framing, without a collector: field
tables, and escaping properties over arbitrary comm/exe/proctitle bytes, each message
parsed back with a small reference parser written here (not the code under test)."""

import json
import re

import pytest
from hypothesis import given, settings, strategies as st

from conftest import CAPTURES
from mlockaudit.compat import isascii
from mlockaudit import syscalls
from mlockaudit.event import Event, Process
from mlockaudit.formats import FORMATS, STATS_FORMATS, get_formatter
from mlockaudit.formats.common import severities
from mlockaudit.replay import replay
from mlockaudit.transports.base import TransportError as SyslogError
from mlockaudit.transports.rfc5424 import Framer, trimmed_event
from mlockaudit.transports.targets import parse_target

# -- reference parsers ----------------------------------------------------------------

_CEF_UNESCAPE = {"\\": "\\", "=": "=", "n": "\n", "r": "\r", "|": "|"}


def parse_cef(line):
    """``CEF:0|...|`` -> (7 header columns, {key: value}) by the CEF rules: the header is
    7 columns split at unescaped ``|``; in the extension an unescaped ``=`` ends a key
    (the word before it) and the value runs to the space before the next key."""
    assert line.startswith("CEF:")
    header, index, column = [], 0, ""
    while len(header) < 7:
        char = line[index]
        if char == "\\":
            column += line[index + 1]
            index += 2
            continue
        if char == "|":
            header.append(column)
            column = ""
        else:
            column += char
        index += 1
    ext = line[index:]
    # positions of unescaped '='
    equals, i = [], 0
    while i < len(ext):
        if ext[i] == "\\":
            i += 2
            continue
        if ext[i] == "=":
            equals.append(i)
        i += 1
    fields = {}
    keys = []
    for pos in equals:
        start = ext.rfind(" ", 0, pos) + 1
        key = ext[start:pos]
        assert re.fullmatch(r"[A-Za-z0-9_]+", key), "bad key %r in %r" % (key, line)
        keys.append((key, start, pos))
    for number, (key, start, pos) in enumerate(keys):
        end = keys[number + 1][1] - 1 if number + 1 < len(keys) else len(ext)
        raw = ext[pos + 1:end]
        value, j = "", 0
        while j < len(raw):
            if raw[j] == "\\":
                value += _CEF_UNESCAPE.get(raw[j + 1], "\\" + raw[j + 1])
                j += 2
            else:
                value += raw[j]
                j += 1
        assert key not in fields, "duplicate key %s" % key
        fields[key] = value
    return header, fields


def parse_leef(line):
    """``LEEF:2.0|V|P|Ver|EventID|DELIM|attrs`` -> (header, {key: value})."""
    parts = line.split("|", 6)
    assert parts[0] == "LEEF:2.0" and len(parts) == 7
    delimiter = parts[5]
    assert len(delimiter) == 1
    fields = {}
    for attribute in parts[6].split(delimiter):
        key, sep, value = attribute.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z0-9_]+", key), "bad attribute %r" % attribute
        assert key not in fields
        fields[key] = value
    return parts[:6], fields


def parse_sd(text):
    """RFC 5424 STRUCTURED-DATA -> [(SD-ID, {name: value})] (strict)."""
    elements, i = [], 0
    if text == "-":
        return elements
    while i < len(text):
        assert text[i] == "[", text
        i += 1
        m = re.compile(r'[^ =\]"]{1,64}').match(text, i)
        sd_id = m.group(0)
        i = m.end()
        params = {}
        while text[i] == " ":
            m = re.compile(r'([^ =\]"]{1,32})="').match(text, i + 1)
            assert m, text[i:]
            name = m.group(1)
            i = m.end()
            value = ""
            while text[i] != '"':
                if text[i] == "\\" and text[i + 1] in '"\\]':
                    value += text[i + 1]
                    i += 2
                else:
                    assert text[i] != "]", "unescaped ] in %r" % text
                    value += text[i]
                    i += 1
            i += 1
            params[name] = value
        assert text[i] == "]"
        i += 1
        elements.append((sd_id, params))
    return elements


_RFC5424 = re.compile(r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")


def parse_rfc5424(data):
    """bytes of one RFC 5424 message -> dict (sd as parsed elements, msg as str)."""
    text = data.decode("utf-8")
    m = _RFC5424.match(text)
    assert m, text[:120]
    rest = text[m.end():]
    # SD: elements up to the first space outside a quoted value
    if rest.startswith("-"):
        sd_text, msg = "-", rest[2:]
    else:
        i, quoted = 0, False
        while True:
            char = rest[i]
            if quoted and char == "\\":
                i += 2
                continue
            if char == '"':
                quoted = not quoted
            if not quoted and char == "]" and (i + 1 == len(rest) or rest[i + 1] == " "):
                break
            i += 1
        sd_text, msg = rest[:i + 1], rest[i + 2:]
    return {"pri": int(m.group(1)), "timestamp": m.group(2), "host": m.group(3),
            "app": m.group(4), "procid": m.group(5), "msgid": m.group(6),
            "sd": parse_sd(sd_text), "msg": msg}


def exact(shown, hex_value):
    """What a receiver can recover: the hex companion if given, else what is shown."""
    if hex_value is not None:
        return bytes.fromhex(hex_value)
    return shown.encode("utf-8")


# -- events ---------------------------------------------------------------------------

def _fixture_events():
    events = []
    replay(str(CAPTURES + "/auditd-raw.log"), events.append)
    return events


FIXTURE_EVENTS = _fixture_events()


def make_event(comm=b"plain", exe=b"/usr/bin/python3", proctitle=b"python3 x.py", name="mlock2",
               ret=-22, hostname="host-1", tid=4242, timestamp=1795715167667000000):
    surrogate = lambda raw: raw.decode("utf-8", "surrogateescape")   # noqa: E731
    extra = {"auid": 1000, "sessionId": 3, "euid": 0, "suid": 0, "fsuid": 0, "gid": 0,
             "egid": 0, "sgid": 0, "fsgid": 0, "tty": "pts0",
             "proctitle": None if proctitle is None else surrogate(proctitle),
             "keys": ["mlockaudit"]}
    process = Process(pid=1234, ppid=1, uid=1000, comm=surrogate(comm),
                      exe=None if exe is None else surrogate(exe), hostname=hostname,
                      extra=extra)
    args = {"mlock2": (0x7F0000001000, 8192, 99), "mlock": (0x1000, 4096),
            "munlock": (0x1000, 4096), "mlockall": (3,), "munlockall": ()}[name]
    return Event(name, "audit", process, timestamp=timestamp, arch="x86_64",
                 syscall_nr=syscalls.SYSCALL_NUMBERS["x86_64"][name], tid=tid, args=args,
                 ret=ret, extra={"serial": 77})


# -- field tables ---------------------------------------------------------------------

def test_ecs_field_table():
    doc = json.loads(FORMATS["ecs"](make_event()))
    assert doc["@timestamp"] == "2026-11-27T09:46:07.667000Z" or doc["@timestamp"].endswith(
        ".667000Z")
    assert doc["event"]["kind"] == "event"
    assert doc["event"]["category"] == ["process"]
    assert doc["event"]["type"] == ["change"]
    assert doc["event"]["action"] == "locked-memory"
    assert doc["event"]["outcome"] == "failure"
    assert doc["event"]["code"] == "mlock2"
    assert doc["event"]["provider"] == "audit"
    assert doc["event"]["severity"] == 4
    assert doc["event"]["sequence"] == 77
    assert doc["process"]["pid"] == 1234
    assert doc["process"]["name"] == "plain"
    assert doc["process"]["executable"] == "/usr/bin/python3"
    assert doc["process"]["command_line"] == "python3 x.py"
    assert doc["process"]["thread"] == {"id": 4242}
    assert doc["process"]["parent"] == {"pid": 1}
    assert doc["process"]["real_user"] == {"id": "1000"}
    assert doc["process"]["user"] == {"id": "0"}
    assert doc["user"] == {"id": "1000", "effective": {"id": "0"}}
    assert doc["host"] == {"hostname": "host-1", "name": "host-1"}
    assert doc["error"] == {"code": "EINVAL"}
    ext = doc["mlockaudit"]
    assert ext["args"] == {"addr": "0x7f0000001000", "len": 8192, "flags": 99}
    assert ext["flagNames"] == "MLOCK_ONFAULT|0x62"
    assert ext["returnValue"] == -22 and ext["errno"] == "EINVAL"
    assert ext["auid"] == 1000 and ext["serial"] == 77
    unlock = json.loads(FORMATS["ecs"](make_event(name="munlockall", ret=0)))
    assert unlock["event"]["action"] == "unlocked-memory"
    assert unlock["event"]["outcome"] == "success" and unlock["event"]["severity"] == 6
    assert "error" not in unlock
    unknown = json.loads(FORMATS["ecs"](make_event(ret=None, timestamp=None)))
    assert unknown["event"]["outcome"] == "unknown" and "@timestamp" not in unknown


def test_cef_field_table():
    header, ext = parse_cef(FORMATS["cef"](make_event()))
    assert header == ["CEF:0", "mlockaudit", "mlockaudit", header[3], "mlock2",
                      "mlock2 failed: EINVAL", "5"]
    assert ext["rt"] == "1795715167667"
    assert ext["dvchost"] == "host-1"
    assert ext["spid"] == "1234" and ext["sproc"] == "plain" and ext["suid"] == "1000"
    assert ext["act"] == "locked-memory" and ext["outcome"] == "failure"
    labelled = {ext[key + "Label"]: ext[key] for key in ext if key + "Label" in ext}
    assert labelled == {"addr": "0x7f0000001000", "len": "8192", "flags": "99",
                        "flagNames": "MLOCK_ONFAULT|0x62", "returnValue": "-22",
                        "errno": "EINVAL", "executable": "/usr/bin/python3",
                        "commandLine": "python3 x.py", "auid": "1000", "tid": "4242",
                        "ppid": "1"}
    assert ext["externalId"] == "77"
    header, ext = parse_cef(FORMATS["cef"](make_event(name="munlock", ret=0)))
    assert header[5] == "munlock succeeded" and header[6] == "1"
    assert ext["act"] == "unlocked-memory" and ext["outcome"] == "success"


def test_leef_field_table():
    header, attrs = parse_leef(FORMATS["leef"](make_event()))
    assert header == ["LEEF:2.0", "mlockaudit", "mlockaudit", header[3], "mlock2", "^"]
    assert attrs["devTime"] == "Nov 27 2026 09:46:07.667 UTC" or attrs["devTime"].endswith(
        ".667 UTC")
    assert attrs["devTimeFormat"] == "MMM dd yyyy HH:mm:ss.SSS zzz"
    assert attrs["cat"] == "locked-memory" and attrs["outcome"] == "failure"
    assert attrs["sev"] == "5"
    assert {k: attrs[k] for k in ("pid", "tid", "ppid", "uid", "euid", "auid", "comm", "exe",
                                  "cmdline", "hostName", "addr", "len", "flags", "flagNames",
                                  "ret", "errno", "serial", "syscall", "backend")} == {
        "pid": "1234", "tid": "4242", "ppid": "1", "uid": "1000", "euid": "0",
        "auid": "1000", "comm": "plain", "exe": "/usr/bin/python3", "cmdline": "python3 x.py",
        "hostName": "host-1", "addr": "0x7f0000001000", "len": "8192", "flags": "99",
        "flagNames": "MLOCK_ONFAULT|0x62", "ret": "-22", "errno": "EINVAL", "serial": "77",
        "syscall": "mlock2", "backend": "audit"}


def test_severity_is_configurable_and_checked():
    custom = severities(success=5, failure=2)
    assert custom == {"success": 5, "failure": 2, "unknown": 2}
    event = make_event()
    assert json.loads(get_formatter("ecs", custom)(event))["event"]["severity"] == 2
    assert parse_cef(get_formatter("cef", custom)(event))[0][6] == "8"
    assert parse_leef(get_formatter("leef", custom)(event))[1]["sev"] == "8"
    framer = Framer("tcp", severities=custom, facility=10)
    data, _ = framer.frame("x", event)
    assert parse_rfc5424(data)["pri"] == 10 * 8 + 2
    with pytest.raises(ValueError):
        severities(success=8)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_fixture_event_renders_and_parses(name):
    formatter = FORMATS[name]
    for event in FIXTURE_EVENTS:
        message = formatter(event)
        assert "\n" not in message and "\r" not in message
        if name in ("tracee", "ecs"):
            json.loads(message)
        elif name == "cef":
            header, ext = parse_cef(message)
            assert header[4] == event.name and ext["spid"] == str(event.pid)
        else:
            header, attrs = parse_leef(message)
            assert header[4] == event.name and attrs["pid"] == str(event.pid)


@pytest.mark.parametrize("name", sorted(STATS_FORMATS))
def test_stats_message_parses(name):
    stats = {"events": 10, "lost": 1, "backend": "audit", "queued": 3}
    message = STATS_FORMATS[name](stats)
    if name in ("tracee", "ecs"):
        assert json.loads(message)["mlockaudit"]["stats"]["events"] == 10
    elif name == "cef":
        header, ext = parse_cef(message)
        assert header[4] == "stats" and ext["cn1Label"] == "events" and ext["cn1"] == "10"
        assert ext["cs1"] == "audit"
    else:
        header, attrs = parse_leef(message)
        assert header[4] == "stats" and attrs["events"] == "10" and attrs["backend"] == "audit"


# -- escaping properties --------------------------------------------------------------

comm_bytes = st.binary(min_size=1, max_size=15).filter(lambda b: b"\0" not in b)
path_bytes = st.binary(max_size=200).filter(lambda b: b"\0" not in b)
HOSTILE = [b'a"b\\c=d|e]', b"evil\nil-1 [000]", b"\xff\xfe\x80bin", b"\t\r\x1b[31m",
           b"x^y=z", b"] [meta sequenceId=\"9\"]", b"cs1=forged act=x", b"\\", b"=", b"|",
           b"\xe2\x80\xa8", b"\xc2\x85", b"CEF:0|a|b", b"\n<13>1 - - - - - -"]


def _check_all_formats(comm, exe, title):
    event = make_event(comm=comm, exe=exe, proctitle=title)
    cef_keys = set(parse_cef(FORMATS["cef"](make_event()))[1])
    leef_keys = set(parse_leef(FORMATS["leef"](make_event()))[1])
    for name, formatter in FORMATS.items():
        message = formatter(event)
        for char in "\n\r\x00\x85\u2028\u2029":
            assert char not in message, (name, char)
        if name in ("tracee", "ecs"):
            assert isascii(message)
            doc = json.loads(message)
            if name == "tracee":
                ext = doc["mlockaudit"]
                assert exact(doc["processName"], ext.get("processNameHex")) == comm
                assert exact(doc["executable"]["path"], ext.get("executablePathHex")) == exe
                assert exact(ext["proctitle"], ext.get("proctitleHex")) == title
            else:
                ext = doc["mlockaudit"]
                assert exact(doc["process"]["name"], ext.get("processNameHex")) == comm
                assert exact(doc["process"]["executable"], ext.get("executableHex")) == exe
                assert exact(doc["process"]["command_line"], ext.get("commandLineHex")) == title
        elif name == "cef":
            header, ext = parse_cef(message)
            assert header[4] == "mlock2"
            hexes = {"flexString1", "flexString1Label", "flexString2", "flexString2Label"}
            assert set(ext) - hexes == cef_keys - hexes          # never a field more or less
            hex_of = {ext[k + "Label"]: ext[k] for k in ("flexString1", "flexString2")
                      if k in ext}
            assert exact(ext["sproc"], hex_of.get("sprocHex")) == comm
            assert exact(ext["cs4"], hex_of.get("executableHex")) == exe
            # the command line has no hex field: what is shown is the text, lossy only where
            # bytes were not UTF-8 or were controls other than \n, \r
            if b"\n" not in title and b"\r" not in title:
                try:
                    text = title.decode("utf-8")
                    if text.isprintable():
                        assert ext["cs5"] == text
                except UnicodeDecodeError:
                    pass
        else:
            header, attrs = parse_leef(message)
            assert header[4] == "mlock2"
            optional = {"commHex", "exeHex", "cmdlineHex"}
            assert set(attrs) - optional == leef_keys - optional
            assert exact(attrs["comm"], attrs.get("commHex")) == comm
            assert exact(attrs["exe"], attrs.get("exeHex")) == exe
            assert exact(attrs["cmdline"], attrs.get("cmdlineHex")) == title
    # RFC 5424 framing: SD never breaks and gains no element or parameter
    for kind in ("tcp", "udp"):
        framer = Framer(kind, pen=32473, hostname="h")
        message = FORMATS["cef"](event)
        data, _ = framer.frame(message, event, FORMATS["cef"], 2048 if kind == "udp" else None)
        assert b"\n" not in data and b"\r" not in data
        parsed = parse_rfc5424(data)
        assert [element[0] for element in parsed["sd"]] == ["meta", "mlockaudit@32473"]
        params = parsed["sd"][1][1]
        assert set(params) - {"commHex", "exeHex", "cut"} == {
            "event", "outcome", "tid", "pid", "uid", "comm", "exe", "ret", "errno"}
        if "cut" not in params:
            assert exact(params["comm"], params.get("commHex")) == comm
            assert exact(params["exe"], params.get("exeHex")) == exe
            assert parsed["msg"] == message
        assert parsed["msgid"] == "mlock2" and parsed["app"] == "mlockaudit"


@pytest.mark.parametrize("comm", HOSTILE)
def test_hostile_strings_forge_nothing(comm):
    _check_all_formats(comm[:15], comm, comm + b" --x")


@settings(max_examples=300, deadline=None)
@given(comm=comm_bytes, exe=path_bytes, title=path_bytes)
def test_arbitrary_bytes_never_split_or_add_a_field(comm, exe, title):
    _check_all_formats(comm, exe, title)


# -- framing --------------------------------------------------------------------------

def test_rfc5424_header_and_sequence():
    framer = Framer("tcp", pen=12345, facility=10, hostname="my host!", procid=99)
    event = make_event(hostname=None)
    first = parse_rfc5424(framer.frame("MSG", event)[0])
    second = parse_rfc5424(framer.frame("MSG", event)[0])
    assert first["pri"] == 10 * 8 + 4
    assert first["timestamp"].endswith(".667000Z")
    assert first["host"] == "myhost!"                 # spaces cannot be in HOSTNAME
    assert (first["app"], first["procid"], first["msgid"]) == ("mlockaudit", "99", "mlock2")
    assert first["sd"][0] == ("meta", {"sequenceId": "1"})
    assert second["sd"][0] == ("meta", {"sequenceId": "2"})
    assert first["sd"][1][0] == "mlockaudit@12345"
    assert first["msg"] == "MSG"
    framer.sequence = 2147483647
    assert parse_rfc5424(framer.frame("MSG", event)[0])["sd"][0][1]["sequenceId"] == "1"


def test_local_form_is_what_syslog3_writes():
    framer = Framer("unix", procid=77)
    data, cut = framer.frame("MSG", make_event())
    assert not cut
    assert re.fullmatch(rb"<84>[A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d mlockaudit\[77\]: MSG", data)


def test_udp_limit_cuts_strings_first_then_msg():
    long_exe = b"/" + b"x" * 3000
    event = make_event(exe=long_exe, proctitle=b"y" * 120)
    framer = Framer("udp", hostname="h")
    for name in ("tracee", "ecs", "cef", "leef"):
        formatter = FORMATS[name]
        data, cut = framer.frame(formatter(event), event, formatter, 2048)
        assert cut and len(data) <= 2048
        parsed = parse_rfc5424(data)
        assert parsed["sd"][1][1]["cut"] == "strings:256"
        if name in ("tracee", "ecs"):
            json.loads(parsed["msg"])                  # still a whole document
    # a limit no trimming can meet: MSG itself is cut, and the SD says by how much
    data, cut = framer.frame(FORMATS["tracee"](event), event, FORMATS["tracee"], 600)
    parsed = parse_rfc5424(data)
    assert cut and len(data) <= 600
    removed = int(parsed["sd"][1][1]["cut"].split(":")[1])
    assert removed > 0
    whole = FORMATS["tracee"](trimmed_event(event, 16))
    assert len(parsed["msg"].encode()) + removed == len(whole.encode())


def test_targets():
    assert parse_target("syslog:") == ("unix", "/dev/log")
    assert parse_target("syslog:/run/x.sock") == ("unix", "/run/x.sock")
    assert parse_target("syslog+tls://siem.example") == ("tls", ("siem.example", 6514))
    assert parse_target("syslog+udp://10.0.0.1") == ("udp", ("10.0.0.1", 514))
    assert parse_target("syslog+tcp://[::1]:1514") == ("tcp", ("::1", 1514))
    for bad in ("syslog+tcp://", "syslog+tcp://h:x", "syslog+tcp://h:70000", "syslog+sctp://h"):
        with pytest.raises(SyslogError):
            parse_target(bad)
