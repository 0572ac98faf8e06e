"""Line-per-event streams: standard output and files (``-`` and ``file:PATH``)."""

import os
import sys

from .. import safefiles
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


class OutputOpenError(Exception):
    """A file output could not be (re)opened: refused (safefiles.UnsafePath: a planted
    link, not a regular file, another user's file) or an OSError. On SIGHUP this does not
    end the run: the transport counts what it is given as dropped until a reopen works."""

    def __init__(self, name, error):
        Exception.__init__(self, "%s; its events are counted as lost until a reopen "
                                 "(SIGHUP) succeeds" % _describe(name, error))
        self.name = name
        self.error = error


def _describe(name, error):
    if isinstance(error, safefiles.UnsafePath):
        return "refusing %s: %s" % (name, error.strerror)
    return "cannot open %s: %s" % (name, error.strerror or error)


class StreamTransport(Transport):
    """Writes one line per message to a binary stream, buffered.

    Files are opened for append (a restarted tracer never truncates what a SIEM shipper is
    still reading) and can be reopened on SIGHUP after logrotate moved them away. Every
    open goes through safefiles: ``O_APPEND|O_CREAT|O_NOFOLLOW|O_CLOEXEC``, a new file
    gets ``mode`` (0600: events carry command lines), a link, a non-regular file (a
    character device such as /dev/null is fine) or another uid's file is refused.

    ``refusal_is_loss``: when the file cannot be opened, do not raise but keep the error
    (``open_error``) and count every message as dropped; ``start`` opens its outputs so
    on SIGHUP. A refused ``reopen()`` does the same and raises OutputOpenError to say so.
    """

    def __init__(self, path=None, buffer_size=1 << 16, mode=safefiles.FILE_MODE,
                 refusal_is_loss=False):
        self.path = path
        self.name = "file:%s" % path if path else "-"
        self.mode = mode
        self._buffer_size = buffer_size
        self._stream = None
        self.sent = 0
        self.dropped = 0            # messages given while the file could not be opened
        self.last_error = None
        self.open_error = None
        try:
            self._open()
        except OSError as exc:
            if not refusal_is_loss or self.path is None:
                raise
            self.open_error = OutputOpenError(self.name, exc)
            self.last_error = _describe(self.name, exc)

    def _open(self):
        if self.path is None:
            self._stream = os.fdopen(os.dup(sys.stdout.fileno()), "wb", self._buffer_size)
        else:
            fd, _created = safefiles.open_file(self.path, os.O_WRONLY | os.O_APPEND,
                                               self.mode, devices=True)
            self._stream = os.fdopen(fd, "ab", self._buffer_size)

    def send(self, message, event=None):
        if self._stream is None:                # refused at the last (re)open
            self.dropped += 1
            return
        try:
            self._stream.write(message.encode("utf-8", "surrogateescape") + b"\n")
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputWriteError(self.name, exc)
        self.sent += 1

    def flush(self):
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputWriteError(self.name, exc)

    def stats(self):
        """Writes to a stream either succeed or raise: nothing is queued; dropped is what
        came while the file was refused (see reopen)."""
        stats = {"sent": self.sent, "dropped": self.dropped, "queued": 0}
        if self.last_error is not None:
            stats["last_error"] = self.last_error
        return stats

    def reopen(self):
        """Close and open again (after logrotate renamed the file), with the same checks
        as the first open: the rotated path may have been replaced meanwhile. A refusal
        raises OutputOpenError, and until a later reopen succeeds every message is counted
        as dropped (the run goes on)."""
        self.close()
        try:
            self._open()
        except OSError as exc:
            if self.path is None:
                raise
            self.last_error = _describe(self.name, exc)
            self.open_error = OutputOpenError(self.name, exc)
            raise self.open_error
        self.open_error = None

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
