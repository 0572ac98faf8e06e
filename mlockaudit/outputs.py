"""The outputs of a run (``-o``, repeatable): each event formatted once, the message handed
to every transport (transports/), delivery counted across them, the heartbeat."""

import threading

from .formats import get_formatter, get_stats_formatter
from .formats.common import DEFAULT_SEVERITIES
from .safefiles import UnsafePath
from .transports.base import TransportError
from .transports.options import OutputOptions
from .transports.stream import OutputOpenError, StreamTransport
from .transports.syslog import SyslogTransport

#: A target or delivery option that cannot be used (the CLI's usage error).
OutputError = TransportError


def open_transport(target, options=None, formatter=None):
    """``-`` -> stdout; ``file:PATH`` -> append to PATH; ``syslog:[PATH]``,
    ``syslog+udp|tcp|tls://HOST[:PORT]`` -> a syslog transport. A ``file:`` target that
    is refused (safefiles: a link, not a regular file, another uid's) or cannot be opened
    is a TransportError, unless ``options.refused_file_is_loss`` (start's SIGHUP)."""
    options = options or OutputOptions()
    if target == "-":
        return StreamTransport()
    if target.startswith("file:"):
        path = target[5:]
        if not path:
            raise TransportError("file: target needs a path, e.g. file:/var/log/mlockaudit.jsonl")
        try:
            return StreamTransport(path, mode=options.file_mode,
                                   refusal_is_loss=options.refused_file_is_loss)
        except UnsafePath as exc:
            raise TransportError("refusing file:%s: %s" % (path, exc.strerror))
        except OSError as exc:
            raise TransportError("cannot open %s: %s" % (path, exc.strerror))
    if target == "syslog" or target.startswith("syslog:") or target.startswith("syslog+"):
        return SyslogTransport(target, options, formatter=formatter)
    raise TransportError("unknown output target %r (use -, file:PATH, syslog:[PATH], "
                         "syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT, "
                         "syslog+tls://HOST:PORT)" % target)


class Outputs(object):
    """Formats each event once and hands the message to every transport."""

    def __init__(self, targets, format_name="tracee", options=None):
        self.options = options or OutputOptions()
        self.format_name = format_name
        self.format = get_formatter(format_name, self.options.severities
                                    if self.options.severities != DEFAULT_SEVERITIES else None)
        self.format_stats = get_stats_formatter(format_name)
        self.transports = []
        self._closed_stats = {}
        self._heartbeat = None
        self._heartbeat_stop = threading.Event()
        try:
            for target in targets or ["-"]:
                self.transports.append(open_transport(target, self.options, self.format))
        except Exception:
            self.close()
            raise
        #: outputs opened with refused_file_is_loss that were refused: what to report
        self.refused = [str(transport.open_error) for transport in self.transports
                        if getattr(transport, "open_error", None) is not None]
        if len(self.transports) == 1:          # the usual case: one call less per event
            send, format_event = self.transports[0].send, self.format
            self.emit = lambda event: send(format_event(event), event)

    def emit(self, event):
        message = self.format(event)
        for transport in self.transports:
            transport.send(message, event)

    def flush(self):
        for transport in self.transports:
            transport.flush()

    def reopen(self):
        """Reopen every transport (SIGHUP). Returns what could not be reopened (one
        message each): those outputs count their messages as lost, the others go on."""
        problems = []
        for transport in self.transports:
            try:
                transport.reopen()
            except OutputOpenError as exc:
                problems.append(str(exc))
        return problems

    # -- delivery accounting ------------------------------------------------------------

    def stats(self):
        """``{"lost": N, "queued": N, "sent": N, ..., "transports": {target: {...}}}``:
        ``lost`` is every message a transport gave up on (queue full, spool cap, unsent
        at the flush deadline); it stays readable after close()."""
        per = dict(self._closed_stats)
        for transport in self.transports:
            per[transport.name] = transport.stats()
        total = {"lost": 0, "queued": 0, "sent": 0, "spooled": 0, "spool_depth": 0,
                 "reconnects": 0, "truncated": 0}
        for stats in per.values():
            total["lost"] += stats.get("dropped", 0)
            for key in ("queued", "sent", "spooled", "spool_depth", "reconnects", "truncated"):
                total[key] += stats.get(key, 0)
        total["transports"] = per
        return total

    def summary(self):
        """One line for stderr about the syslog targets (and file outputs that lost
        messages), or None when there are none."""
        per = self.stats()["transports"]
        parts = []
        for name, stats in per.items():
            if "spooled" not in stats:
                if stats.get("dropped"):           # a file output that was refused
                    parts.append("%s: sent=%d lost=%d (%s)" % (
                        name, stats["sent"], stats["dropped"], stats.get("last_error")))
                continue
            text = "%s: sent=%d lost=%d spooled=%d in_spool=%d reconnects=%d" % (
                name, stats["sent"], stats["dropped"], stats["spooled"], stats["spool_depth"],
                stats["reconnects"])
            if stats.get("truncated"):
                text += " truncated=%d" % stats["truncated"]
            if stats.get("dropped") and stats.get("last_error"):
                text += " (%s)" % stats["last_error"]
            parts.append(text)
        return "; ".join(parts) or None

    # -- heartbeat ----------------------------------------------------------------------

    def heartbeat(self, stats):
        """Send one stats message (MSGID ``stats``) through every syslog transport.
        ``stats`` comes from the caller (events, lost, backend, ...); the delivery
        counters (queued, delivery_lost, sent, spool_depth) are added here."""
        delivery = self.stats()
        message_stats = dict(stats)
        message_stats.update(queued=delivery["queued"], delivery_lost=delivery["lost"],
                             sent=delivery["sent"], spool_depth=delivery["spool_depth"])
        message = self.format_stats(message_stats)
        for transport in self.transports:
            if transport.takes_stats:
                transport.send_stats(message, message_stats)

    def start_heartbeat(self, source, interval=None):
        """Call ``heartbeat(source())`` every ``interval`` seconds (the options'
        ``--stats-interval`` by default; 0 or None: never) from a daemon thread until
        close(). ``source`` returns a dict such as
        ``{"events": N, "lost": M, "backend": "audit"}``."""
        interval = self.options.stats_interval if interval is None else interval
        if not interval or interval <= 0 or self._heartbeat is not None:
            return
        if not any(transport.takes_stats for transport in self.transports):
            return

        def run():
            while not self._heartbeat_stop.wait(interval):
                try:
                    self.heartbeat(source())
                except Exception:             # a broken source must not stop delivery
                    pass
        self._heartbeat = threading.Thread(target=run, name="heartbeat", daemon=True)
        self._heartbeat.start()

    def close(self):
        self._heartbeat_stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        for transport in self.transports:
            transport.begin_close()
        for transport in self.transports:
            transport.close()
            self._closed_stats[transport.name] = transport.stats()
        self.transports = []
