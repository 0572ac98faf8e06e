"""What the formats (and the syslog SD) carry of the pipeline's additions: the counts of
--coalesce summaries (coalesce.py) and detections (detect.py), each parsed back with the
reference parsers of test_formats_siem."""

import json

from mlockaudit.event import Process
from mlockaudit.formats import FORMATS
from mlockaudit.transports.rfc5424 import Framer
from test_coalesce import SECOND, T0, call, process
from test_formats_siem import parse_cef, parse_leef, parse_rfc5424


def _summary():
    proc = Process(pid=1234, ppid=1, uid=1000, comm="storm", exe="/usr/bin/storm",
                   hostname="host-1")
    event = call(proc, T0 + SECOND, serial=78)
    extra = dict(event.extra, count=49999, firstTimestamp=T0 + SECOND,
                 lastTimestamp=T0 + 3 * SECOND)
    return event.replace(extra=extra)


def test_every_format_carries_the_count():
    event = _summary()
    doc = json.loads(FORMATS["tracee"](event))
    assert doc["mlockaudit"]["count"] == 49999
    assert doc["mlockaudit"]["firstTimestamp"] == T0 + SECOND
    assert doc["mlockaudit"]["lastTimestamp"] == T0 + 3 * SECOND
    doc = json.loads(FORMATS["ecs"](event))
    assert doc["mlockaudit"]["count"] == 49999
    assert "firstTimestamp" not in doc["mlockaudit"]
    assert doc["event"]["start"] == "2026-11-26T17:46:08.000000000Z"
    assert doc["event"]["end"] == "2026-11-26T17:46:10.000000000Z"
    assert doc["event"]["sequence"] == 78
    _, ext = parse_cef(FORMATS["cef"](event))
    assert ext["cnt"] == "49999"
    assert ext["start"] == str((T0 + SECOND) // 1000000)
    assert ext["end"] == str((T0 + 3 * SECOND) // 1000000)
    _, attrs = parse_leef(FORMATS["leef"](event))
    assert attrs["count"] == "49999"
    assert attrs["firstTimestamp"] == str(T0 + SECOND)
    framer = Framer("tcp", pen=32473, hostname="h")
    data, _ = framer.frame(FORMATS["cef"](event), event)
    params = parse_rfc5424(data)["sd"][1][1]
    assert params["count"] == "49999"
    # and a first call says count 1 everywhere too
    first = call(event.process, T0).replace(extra={"count": 1})
    assert json.loads(FORMATS["ecs"](first))["mlockaudit"]["count"] == 1
    assert "start" not in json.loads(FORMATS["ecs"](first))["event"]
    assert parse_cef(FORMATS["cef"](first))[1]["cnt"] == "1"
    assert parse_leef(FORMATS["leef"](first))[1]["count"] == "1"


def test_without_coalescing_nothing_changes():
    event = call(process(), T0, serial=5)
    doc = json.loads(FORMATS["ecs"](event))
    assert "count" not in doc["mlockaudit"] and "start" not in doc["event"]
    assert "cnt" not in parse_cef(FORMATS["cef"](event))[1]


def _detection(comm="xmrig"):
    proc = Process(pid=1234, ppid=1, uid=1000, comm=comm, exe="/tmp/x", hostname="host-1",
                   extra={"proctitle": "./x --donate-level 0"})
    trigger = call(proc, T0 + SECOND, length=2 << 20, serial=78, tid=1235)
    detection = {"id": "memlock-raise-then-lock",
                 "title": "RLIMIT_MEMLOCK raised, then 1 MiB or more locked", "severity": "high",
                 "calls": [{"name": "setrlimit", "timestamp": T0, "serial": 77,
                            "outcome": "success"},
                           {"name": "mlock", "timestamp": T0 + SECOND, "serial": 78,
                            "outcome": "success"}]}
    return trigger.replace(name="detection", args=(), ret=None, arch=None, syscall_nr=None,
                           extra={"detection": detection})


def test_a_detection_in_every_format():
    event = _detection()
    detection = event.extra["detection"]
    doc = json.loads(FORMATS["tracee"](event))
    assert doc["eventName"] == "detection" and doc["args"] == []
    assert doc["hostProcessId"] == 1234 and doc["processName"] == "xmrig"
    assert doc["hostThreadId"] == 1235 and doc["timestamp"] == T0 + SECOND
    assert doc["mlockaudit"]["detection"] == detection
    doc = json.loads(FORMATS["ecs"](event))
    assert doc["event"]["kind"] == "alert" and doc["event"]["severity"] == 3
    assert doc["event"]["dataset"] == "mlockaudit.detection"
    assert doc["rule"] == {"id": "memlock-raise-then-lock", "name": detection["title"]}
    assert doc["process"]["pid"] == 1234 and doc["process"]["thread"]["id"] == 1235
    assert doc["process"]["command_line"] == "./x --donate-level 0"
    assert doc["mlockaudit"]["detection"] == detection
    header, ext = parse_cef(FORMATS["cef"](event))
    assert header[4:] == ["memlock-raise-then-lock", detection["title"], "7"]
    assert ext["spid"] == "1234" and ext["cs1"] == "memlock-raise-then-lock"
    assert ext["cs2"] == "setrlimit@%d#77,mlock@%d#78" % (T0, T0 + SECOND)
    assert ext["cnt"] == "2" and ext["rt"] == str((T0 + SECOND) // 1000000)
    header, attrs = parse_leef(FORMATS["leef"](event))
    assert header[4] == "memlock-raise-then-lock"
    assert attrs["ruleName"] == detection["title"] and attrs["sev"] == "7"
    assert attrs["pid"] == "1234" and attrs["cat"] == "detection"
    for kind in ("tcp", "unix"):
        framer = Framer(kind, pen=32473, hostname="h")
        data, _ = framer.frame(FORMATS["ecs"](event), event)
        assert data.startswith(b"<%d>" % (10 * 8 + 3))         # authpriv.err: "high"
    data, _ = Framer("tcp", pen=32473, hostname="h").frame(FORMATS["cef"](event), event)
    message = parse_rfc5424(data)
    assert message["msgid"] == "detection"
    params = message["sd"][1][1]
    assert params["event"] == "detection" and params["rule"] == "memlock-raise-then-lock"
    assert params["severity"] == "high" and params["pid"] == "1234"


def test_a_hostile_comm_forges_nothing_in_a_detection():
    event = _detection(comm="x\n|^=]\"\\ CEF:0|a")
    for name, formatter in FORMATS.items():
        message = formatter(event)
        assert "\n" not in message
        if name in ("tracee", "ecs"):
            assert json.loads(message)["mlockaudit"]["detection"]["id"] == \
                "memlock-raise-then-lock"
        elif name == "cef":
            header, ext = parse_cef(message)
            assert header[4] == "memlock-raise-then-lock" and ext["cs1"] == header[4]
        else:
            header, attrs = parse_leef(message)
            assert header[4] == "memlock-raise-then-lock"
    data, _ = Framer("tcp", pen=32473, hostname="h").frame(FORMATS["cef"](event), event)
    assert [element[0] for element in parse_rfc5424(data)["sd"]] == ["meta", "mlockaudit@32473"]
