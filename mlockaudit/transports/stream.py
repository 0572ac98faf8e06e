"""Line-per-event streams: standard output and files (``-`` and ``file:PATH``)."""

import os
import sys


class StreamTransport(object):
    """Writes one line per message to a binary stream, buffered.

    Files are opened for append (a restarted tracer never truncates what a SIEM shipper is
    still reading) and can be reopened on SIGHUP after logrotate moved them away.
    """

    def __init__(self, path=None, buffer_size=1 << 16):
        self.path = path
        self.name = "file:%s" % path if path else "-"
        self._buffer_size = buffer_size
        self._stream = None
        self.sent = 0
        self._open()

    def _open(self):
        if self.path is None:
            self._stream = os.fdopen(os.dup(sys.stdout.fileno()), "wb", self._buffer_size)
        else:
            self._stream = open(self.path, "ab", self._buffer_size)

    def send(self, message, event=None):
        self._stream.write(message.encode("utf-8", "surrogateescape") + b"\n")
        self.sent += 1

    def flush(self):
        self._stream.flush()

    def stats(self):
        """Writes to a stream either succeed or raise: nothing is queued or dropped."""
        return {"sent": self.sent, "dropped": 0, "queued": 0}

    def reopen(self):
        """Close and open again (after logrotate renamed the file)."""
        self.close()
        self._open()

    def close(self):
        if self._stream is not None:
            try:
                self._stream.flush()
            except BrokenPipeError:
                pass
            finally:
                try:
                    self._stream.close()
                except BrokenPipeError:
                    pass
                self._stream = None
