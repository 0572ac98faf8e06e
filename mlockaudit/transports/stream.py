"""Line-per-event streams: standard output and files (``-`` and ``file:PATH``)."""

import os
import sys

from .base import Transport


class OutputWriteError(Exception):
    """A message could not be written (ENOSPC, EIO, ...): the output's fault, never the
    input's. Not an OSError, so that readers that handle their input's OSErrors (replay)
    let it through to the command, which says which output failed. A closed pipe stays a
    BrokenPipeError (a reader such as ``head`` that has seen enough)."""

    def __init__(self, name, error):
        Exception.__init__(self, "cannot write the output %s: %s" % (
            "- (standard output)" if name == "-" else name, error.strerror or error))
        self.name = name
        self.error = error


class StreamTransport(Transport):
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
        try:
            self._stream.write(message.encode("utf-8", "surrogateescape") + b"\n")
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputWriteError(self.name, exc)
        self.sent += 1

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputWriteError(self.name, exc)

    def stats(self):
        """Writes to a stream either succeed or raise: nothing is queued or dropped."""
        return {"sent": self.sent, "dropped": 0, "queued": 0}

    def reopen(self):
        """Close and open again (after logrotate renamed the file)."""
        self.close()
        self._open()

    def close(self):
        """Flush and close; raises OutputWriteError when what was buffered cannot be
        written (the stream is closed all the same)."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        failed = None
        try:
            stream.flush()
        except BrokenPipeError:
            pass
        except OSError as exc:
            failed = exc
        finally:
            try:
                stream.close()          # (flushes again what could not be written: fails)
            except OSError:
                pass
        if failed is not None:
            raise OutputWriteError(self.name, failed)
