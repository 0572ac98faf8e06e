"""auditd's text as input, for kernels where mlockaudit cannot read audit netlink beside
auditd (no multicast before 3.16): as an auditd plugin on stdin, or following its log.

Both give whole lines in auditd's log format (records.parse_log_line reads them):

* :class:`StreamInput` reads a pipe (stdin of an auditd plugin, ``format = string``);
  end of file means auditd stopped the plugin, and mlockaudit stops with it.
* :class:`LogFollower` follows /var/log/audit/audit.log across rotation: auditd renames
  the file (audit.log -> audit.log.1) and opens a new one, so when the path names another
  inode, or the file shrank, the old file is read to its end before the new one is opened
  from its start. It starts at the end of the current file (events from now on).
"""

import io
import os

CHUNK = 1 << 20
#: Longest line kept: auditd's lines are under 10 KB (MAX_AUDIT_MESSAGE_LENGTH 8970, plus
#: node= and the ENRICHED part); the start of a longer one is dropped and counted
#: (``overlong``), so that memory stays bounded by this, not by the input.
MAX_LINE = 1 << 20


class StreamInput(object):
    """Lines from a pipe or any readable fd (non-blocking)."""

    def __init__(self, fd):
        self.fd = fd
        self.name = "stdin" if fd == 0 else "fd %d" % fd
        os.set_blocking(fd, False)
        self._partial = []             # the unfinished last line, in chunks (joined once)
        self._partial_size = 0
        self.overlong = 0
        self.finished = False

    def fileno(self):
        return self.fd

    def read_lines(self):
        chunks = []
        while True:
            try:
                data = os.read(self.fd, CHUNK)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not data:
                self.finished = True
                break
            chunks.append(data)
        return self._split(b"".join(chunks))

    def _split(self, data):
        """Whole lines of ``data`` after what was left over; keeps the unfinished end.
        Linear however long a line takes to arrive (its chunks are joined once)."""
        if not data:
            if self.finished and self._partial:
                return [self._take_partial()]
            return []
        if b"\n" not in data:
            self._keep(data)
            return []
        lines = data.split(b"\n")
        if self._partial:
            lines[0] = self._take_partial() + lines[0]
        last = lines.pop()
        if last:
            self._keep(last)
        return lines

    def _keep(self, chunk):
        self._partial.append(chunk)
        self._partial_size += len(chunk)
        if self._partial_size > MAX_LINE:        # no auditd line is this long: drop it
            self._partial = []
            self._partial_size = 0
            self.overlong += 1

    def _take_partial(self):
        line = b"".join(self._partial)
        self._partial = []
        self._partial_size = 0
        return line

    def close(self):
        pass


class LogFollower(StreamInput):
    """Lines appended to a log file, across rotation (see the module docstring)."""

    def __init__(self, path, from_start=False):
        self.path = path
        self.name = path
        self._partial = []
        self._partial_size = 0
        self.overlong = 0
        self.finished = False
        self.rotations = 0
        self._file = None
        self._open(at_end=not from_start)

    def _open(self, at_end):
        handle = open(self.path, "rb")
        if at_end:
            handle.seek(0, os.SEEK_END)
        self._file = handle
        self._inode = os.fstat(handle.fileno()).st_ino

    def fileno(self):
        return None                       # regular files are always "readable": poll by time

    def read_lines(self):
        lines = self._split(self._file.read())
        try:
            current = os.stat(self.path)
        except FileNotFoundError:         # renamed, the new file not there yet: next time
            return lines
        if current.st_ino == self._inode and current.st_size >= self._file.tell():
            return lines
        # rotated (another inode) or truncated: finish the old file, then the new one
        lines += self._split(self._file.read())
        if self._partial:
            lines.append(self._take_partial())
        self._file.close()
        self.rotations += 1
        try:
            self._open(at_end=False)
        except FileNotFoundError:         # gone again in between: an empty stand-in, and
            self._file = io.BytesIO()     # the next call sees another inode and retries
            self._inode = None
        return lines + self._split(self._file.read())

    def close(self):
        if self._file is not None:
            self._file.close()
