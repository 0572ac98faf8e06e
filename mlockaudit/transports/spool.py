"""A bounded, persistent FIFO of messages on disk (``--spool DIR``), used by a syslog
transport while its collector cannot be reached.

Layout: ``DIR/NNNNNNNNNNNNNNNN.spool`` segment files, each a run of records
``4-byte big-endian length + message bytes``, read oldest first. A segment is deleted once
all of its records were delivered; a segment read only in part is rewritten on
:meth:`Spool.close` with what is left, so a clean stop never sends a record twice. After a
crash, the records of the segment that was being sent may be sent again (at least once);
the RFC 5424 ``meta sequenceId`` lets a receiver see that.

The size cap counts segment bytes. When a new record would exceed it, whole oldest
segments are deleted and their records counted as ``dropped`` (the loss the daemon
reports). A lock file (``flock``) keeps two processes from sharing one spool.

The spooled messages are events (command lines): the directory is private (0700, ours, not
a link) and every file in it 0600, opened without following links (safefiles).
"""

import fcntl
import os
import struct

from .. import safefiles

_LEN = struct.Struct(">I")
SUFFIX = ".spool"


class SpoolError(OSError):
    """The spool directory cannot be used (permissions, another process holds it)."""


class Spool(object):
    def __init__(self, directory, max_bytes, segment_bytes=None):
        self.directory = directory
        self.max_bytes = max(int(max_bytes), 4096)
        self.segment_bytes = segment_bytes or max(64 << 10, min(8 << 20, self.max_bytes // 16))
        self.dropped = 0          # records deleted to respect the cap, or unreadable
        self.written = 0          # records ever appended
        try:
            safefiles.private_dir(directory)
            fd, _created = safefiles.open_file(os.path.join(directory, ".lock"),
                                               os.O_WRONLY | os.O_APPEND)
            self._lock = os.fdopen(fd, "ab")
        except safefiles.UnsafePath as exc:
            raise SpoolError(exc.errno, "spool %s: %s" % (directory, exc))
        except OSError as exc:
            raise SpoolError(exc.errno, "spool %s: %s" % (directory, exc.strerror))
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise SpoolError(0, "spool %s is in use by another process" % directory)
        self._segments = {}       # id -> [bytes, records] of closed + current segments
        self._order = []          # segment ids, oldest first
        self._writer = None       # open file of the newest segment
        self._writer_id = None
        self._head = None         # records of the oldest segment, loaded for reading
        self._head_id = None
        self._head_index = 0      # records of _head already delivered
        try:
            self._scan()
        except safefiles.UnsafePath as exc:      # (a planted link among the segments)
            self._lock.close()
            raise SpoolError(exc.errno, "spool %s: %s" % (directory, exc))

    # -- bookkeeping --------------------------------------------------------------------

    def _path(self, segment):
        return os.path.join(self.directory, "%016d%s" % (segment, SUFFIX))

    def _scan(self):
        for entry in sorted(os.listdir(self.directory)):
            if not entry.endswith(SUFFIX) or not entry[:-len(SUFFIX)].isdigit():
                continue
            segment = int(entry[:-len(SUFFIX)])
            records, size, bad = self._read_segment(segment, count_only=True)
            self.dropped += bad
            if records == 0:
                os.unlink(self._path(segment))
                continue
            self._segments[segment] = [size, records]
            self._order.append(segment)

    def _read_segment(self, segment, count_only=False):
        """(records or their count, bytes, unreadable records) of one segment file; a
        record cut short by a crash is unreadable."""
        data = safefiles.read_file(self._path(segment))
        records = []
        count = 0
        offset = 0
        while offset + 4 <= len(data):
            (length,) = _LEN.unpack_from(data, offset)
            if offset + 4 + length > len(data):
                break
            if not count_only:
                records.append(data[offset + 4:offset + 4 + length])
            count += 1
            offset += 4 + length
        bad = 1 if offset < len(data) else 0
        return (count if count_only else records), offset, bad

    def __len__(self):
        total = sum(records for _size, records in self._segments.values())
        return total - self._head_index if self._head is not None else total

    @property
    def size(self):
        return sum(size for size, _records in self._segments.values())

    # -- writing ------------------------------------------------------------------------

    def append(self, messages):
        """Append records (bytes) in order. Returns how many older records were dropped
        to stay within the cap."""
        dropped_before = self.dropped
        size = self.size
        for message in messages:
            need = 4 + len(message)
            while size + need > self.max_bytes and self._order:
                size -= self._drop_oldest()
            if need > self.max_bytes:
                self.dropped += 1
                continue
            if self._writer is None or self._segments[self._writer_id][0] + need > \
                    self.segment_bytes:
                self._rotate()
            self._writer.write(_LEN.pack(len(message)))
            self._writer.write(message)
            entry = self._segments[self._writer_id]
            entry[0] += need
            entry[1] += 1
            size += need
            self.written += 1
        if self._writer is not None:
            self._writer.flush()
        return self.dropped - dropped_before

    def _rotate(self):
        self._close_writer()
        segment = (self._order[-1] + 1) if self._order else 1
        fd, _created = safefiles.open_file(self._path(segment), os.O_WRONLY | os.O_APPEND)
        self._writer = os.fdopen(fd, "ab")
        self._writer_id = segment
        self._segments[segment] = [0, 0]
        self._order.append(segment)

    def _close_writer(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._writer_id = None

    def _drop_oldest(self):
        segment = self._order.pop(0)
        size, records = self._segments.pop(segment)
        if segment == self._head_id:
            records -= self._head_index
            self._head = self._head_id = None
            self._head_index = 0
        if segment == self._writer_id:
            self._close_writer()
        self.dropped += records
        try:
            os.unlink(self._path(segment))
        except FileNotFoundError:
            pass
        return size

    # -- reading ------------------------------------------------------------------------

    def peek(self, max_bytes=1 << 16):
        """The oldest records (at least one if any), up to about ``max_bytes``."""
        if self._head is None:
            if not self._order:
                return []
            segment = self._order[0]
            if segment == self._writer_id:
                self._close_writer()
            records, _size, _bad = self._read_segment(segment)  # bad ones counted by _scan
            self._head, self._head_id, self._head_index = records, segment, 0
            if not records:
                self._finish_head()
                return self.peek(max_bytes)
        out = []
        total = 0
        for record in self._head[self._head_index:]:
            if out and total + len(record) > max_bytes:
                break
            out.append(record)
            total += len(record)
        return out

    def consume(self, count):
        """Mark the first ``count`` records returned by :meth:`peek` as delivered."""
        self._head_index += count
        if self._head is not None and self._head_index >= len(self._head):
            self._finish_head()

    def _finish_head(self):
        segment = self._head_id
        self._head = self._head_id = None
        self._head_index = 0
        if segment in self._segments:
            del self._segments[segment]
            self._order.remove(segment)
            try:
                os.unlink(self._path(segment))
            except FileNotFoundError:
                pass

    def close(self):
        """Persist what is left: a partly delivered head segment is rewritten without its
        delivered records."""
        self._close_writer()
        if self._head is not None and self._head_index:
            rest = self._head[self._head_index:]
            path = self._path(self._head_id)
            tmp = path + ".tmp"
            fd, _created = safefiles.open_file(tmp, os.O_WRONLY)
            os.ftruncate(fd, 0)
            with os.fdopen(fd, "wb") as handle:
                for record in rest:
                    handle.write(_LEN.pack(len(record)))
                    handle.write(record)
            os.replace(tmp, path)
        self._head = self._head_id = None
        self._head_index = 0
        if self._lock is not None:
            self._lock.close()
            self._lock = None
