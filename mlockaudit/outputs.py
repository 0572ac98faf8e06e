"""Output targets (``-o``): parse the target strings and fan each event out to them."""

from .formats import get_formatter
from .transports.stream import StreamTransport


class OutputError(ValueError):
    """A target string that cannot be used; the message says why."""


def open_transport(target):
    """``-`` -> stdout; ``file:PATH`` -> append to PATH."""
    if target == "-":
        return StreamTransport()
    if target.startswith("file:"):
        path = target[5:]
        if not path:
            raise OutputError("file: target needs a path, e.g. file:/var/log/mlockaudit.jsonl")
        try:
            return StreamTransport(path)
        except OSError as exc:
            raise OutputError("cannot open %s: %s" % (path, exc.strerror))
    raise OutputError("unknown output target %r (use -, file:PATH)" % target)


class Outputs(object):
    """Formats each event once and hands the message to every transport."""

    def __init__(self, targets, format_name="tracee"):
        self.format = get_formatter(format_name)
        self.transports = []
        try:
            for target in targets or ["-"]:
                self.transports.append(open_transport(target))
        except Exception:
            self.close()
            raise
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
        for transport in self.transports:
            transport.reopen()

    def close(self):
        for transport in self.transports:
            transport.close()
        self.transports = []
