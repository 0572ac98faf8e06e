"""RFC 5424 messages: the header, the structured data (SD-PARAM values escape ``"``,
``\\`` and ``]``, RFC 5424 6.3.3; controls and bytes that are not UTF-8 show as U+FFFD with
``commHex``/``exeHex`` carrying the exact bytes), the local syslog(3) form for /dev/log,
and the UDP fallback that keeps a message within a datagram.

    RFC 5424:  <PRI>1 TIMESTAMP HOSTNAME mlockaudit PROCID MSGID [meta sequenceId="N"]
               [mlockaudit@PEN event="mlock2" outcome="success" pid="..." comm="..." ...] MSG
    local:     <PRI>Mmm dd hh:mm:ss mlockaudit[PID]: MSG   (what syslog(3) writes)

MSG is the formatted event; the formats guarantee it holds no raw newline.
"""

import os
import time

from ..compat import time_ns
from ..formats.common import (DEFAULT_SEVERITIES, detection_severity, iso_utc, local_syslog_time, raw_bytes,
                              safe_text, utf8_cut)
from .options import APP_NAME, DEFAULT_FACILITY, DEFAULT_PEN

_SD_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "]": "\\]"})


def sd_value(text):
    """An SD-PARAM value: (escaped text, hex of the exact bytes or None)."""
    shown, raw = safe_text(text)
    return shown.translate(_SD_ESCAPES), raw


def header_token(text, limit):
    """HOSTNAME / APP-NAME / PROCID / MSGID: printable US-ASCII without space, or ``-``."""
    if not text:
        return "-"
    token = "".join(c for c in text if "!" <= c <= "~")[:limit]
    return token or "-"


def _cut_text(text, limit):
    """A surrogateescape str cut to ``limit`` bytes (whole UTF-8 characters), marked."""
    data = raw_bytes(text)
    if len(data) <= limit:
        return text
    return utf8_cut(data, limit).decode("utf-8", "surrogateescape") + "..."


def trimmed_event(event, limit):
    """A copy of an event whose process strings (comm, exe, command line, every string
    of ``extra``) are cut to ``limit`` bytes: the UDP fallback for messages too long."""
    process = event.process
    extra = {key: _cut_text(value, limit) if value.__class__ is str else value
             for key, value in process.extra.items()}
    small = process.replace(
        comm=None if process.comm is None else _cut_text(process.comm, limit),
        exe=None if process.exe is None else _cut_text(process.exe, limit), extra=extra)
    return event.replace(process=small)


class Framer(object):
    """Turns (MSG, event) into the bytes of one syslog message for one target kind."""

    def __init__(self, kind, pen=DEFAULT_PEN, facility=DEFAULT_FACILITY,
                 severities=DEFAULT_SEVERITIES, hostname=None, procid=None):
        self.kind = kind
        self.pen = int(pen)
        self.sd_id = "%s@%d" % (APP_NAME, self.pen)
        self.facility = facility
        self.severities = severities
        self.hostname = header_token(hostname or os.uname().nodename, 255)
        self.procid = procid if procid is not None else os.getpid()
        self.sequence = 0
        self._process_key = ("syslog-sd", self.pen)

    def next_sequence(self):
        """RFC 5424 7.3.1: 1..2147483647, then wraps to 1."""
        self.sequence = self.sequence % 2147483647 + 1
        return self.sequence

    def _process_sd(self, process):
        cached = process.rendered.get(self._process_key)
        if cached is not None:
            return cached
        parts = []
        for key, number in (("pid", process.pid), ("uid", process.uid)):
            if number is not None:
                parts.append(' %s="%d"' % (key, number))
        for key, text in (("comm", process.comm), ("exe", process.exe)):
            if text is not None:
                shown, raw = sd_value(text)
                parts.append(' %s="%s"' % (key, shown))
                if raw is not None:
                    parts.append(' %sHex="%s"' % (key, raw))
        cached = "".join(parts)
        process.rendered[self._process_key] = cached
        return cached

    def structured_data(self, event, sequence, cut=None):
        if event.name == "detection":           # detect.py: the rule instead of a call
            detection = event.extra["detection"]
            sd = '[meta sequenceId="%d"][%s event="detection" rule="%s" severity="%s"' % (
                sequence, self.sd_id, sd_value(detection["id"])[0],
                sd_value(detection["severity"])[0])
        else:
            sd = '[meta sequenceId="%d"][%s event="%s" outcome="%s"' % (
                sequence, self.sd_id, event.name, event.outcome)
        if event.tid is not None:
            sd += ' tid="%d"' % event.tid
        sd += self._process_sd(event.process)
        if event.ret is not None:
            sd += ' ret="%d"' % event.ret
            if event.ret < 0 and event.errno_name:
                sd += ' errno="%s"' % event.errno_name
        decoded = event.decoded()
        if decoded:                    # the surface beyond the family: what it did, decoded
            sd += ' action="%s"' % event.action
            for key, value in sorted(decoded.items()):
                if value is not None:
                    if isinstance(value, dict):
                        value = ",".join("%s:%s" % item for item in sorted(value.items()))
                    sd += ' %s="%s"' % (key, sd_value(str(value))[0])
        count = event.extra.get("count")
        if count.__class__ is int:              # --coalesce (coalesce.py)
            sd += ' count="%d"' % count
        if cut:
            sd += ' cut="%s"' % cut
        return sd + "]"

    def hostname_of(self, event):
        if event is not None and event.process.hostname:
            return header_token(event.process.hostname, 255)
        return self.hostname

    def rfc5424(self, message, event, sequence, severity, cut=None, sd=None):
        """The RFC 5424 message (bytes, no framing)."""
        timestamp = event.timestamp if event is not None and event.timestamp else time_ns()
        msgid = event.name if event is not None else "stats"
        if sd is None:
            sd = self.structured_data(event, sequence, cut)
        head = "<%d>1 %s %s %s %d %s %s " % (
            self.facility * 8 + severity, iso_utc(timestamp) or "-",    # (NILVALUE: a time
            self.hostname_of(event), APP_NAME, self.procid, msgid, sd)  # no format can show)
        return head.encode("utf-8") + message.encode("utf-8", "surrogateescape")

    def local(self, message, event, severity):
        """The local syslog(3) form for /dev/log (journald, rsyslog's imuxsock)."""
        if event is not None and event.timestamp:
            seconds = event.timestamp // 1000000000
        else:
            seconds = int(time.time())
        head = "<%d>%s %s[%d]: " % (self.facility * 8 + severity, local_syslog_time(seconds),
                                    APP_NAME, self.procid)
        return head.encode("ascii") + message.encode("utf-8", "surrogateescape")

    def severity_of(self, event):
        if event.name == "detection":
            return detection_severity(event)
        return self.severities[event.outcome]

    def frame(self, message, event, formatter=None, limit=None, stats_sd=None):
        """(message, event) -> (bytes, was it cut). ``event`` None is a heartbeat whose
        SD is ``stats_sd``. ``limit`` (UDP) keeps the message within that many bytes:
        first by re-formatting the event with its process strings cut (``cut="strings"``),
        then by cutting MSG (``cut="msg:N"``, N the bytes removed)."""
        if self.kind == "unix":
            severity = self.severity_of(event) if event is not None else 6
            return self.local(message, event, severity), False
        sequence = self.next_sequence()
        if event is None:
            severity = 6
            sd = '[meta sequenceId="%d"][%s%s]' % (sequence, self.sd_id, stats_sd or "")
            data = self.rfc5424(message, None, sequence, severity, sd=sd)
        else:
            severity = self.severity_of(event)
            data = self.rfc5424(message, event, sequence, severity)
        if limit is None or len(data) <= limit:
            return data, False
        if event is not None and formatter is not None:
            for size in (256, 64, 16):
                small = trimmed_event(event, size)
                data = self.rfc5424(formatter(small), small, sequence, severity,
                                    cut="strings:%d" % size)
                if len(data) <= limit:
                    return data, True
        # last resort: cut MSG itself; the SD says how many bytes of it were cut
        small = event
        if event is not None and formatter is not None:
            small = trimmed_event(event, 16)
            message = formatter(small)
        body = message.encode("utf-8", "surrogateescape")

        def head(removed):
            if event is None:
                return self.rfc5424("", None, sequence, severity,
                                    sd=sd[:-1] + ' cut="msg:%d"]' % removed)
            return self.rfc5424("", small, sequence, severity, cut="msg:%d" % removed)

        room = limit - len(head(len(body)))
        kept = utf8_cut(body, max(room, 0))
        data = head(len(body) - len(kept)) + kept
        return data[:limit], True
