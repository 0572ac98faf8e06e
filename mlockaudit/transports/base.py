"""What every output transport is, for the fan-out (outputs.py): a Transport takes each
formatted message with the event it came from, and reports what it did with them.

The contract: ``send(message, event)`` never blocks the caller (queue or write), except
in replay, where a full queue waits instead of dropping; ``send_stats(message, stats)``
takes a heartbeat where the transport has a place for one (``takes_stats``);
``flush()``, ``reopen()`` (SIGHUP: logrotate moved a file, a collector's name may point
elsewhere); ``begin_close()`` starts the delivery deadline without waiting (all transports
of a run share one) and ``close()`` ends it; ``stats()`` -> ``{"sent", "dropped",
"queued", ...}`` at any time, ``dropped`` being every message given up on.
"""


class TransportError(ValueError):
    """A target string or option that cannot be used; the message says why."""


class Transport(object):
    name = None
    takes_stats = False

    def send(self, message, event=None):
        raise NotImplementedError

    def send_stats(self, message, stats):
        pass

    def flush(self):
        pass

    def reopen(self):
        pass

    def begin_close(self, timeout=None):
        pass

    def close(self):
        pass

    def stats(self):
        return {"sent": 0, "dropped": 0, "queued": 0}
