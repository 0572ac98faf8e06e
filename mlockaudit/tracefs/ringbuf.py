"""The ftrace ring buffer, read in its binary form: ``per_cpu/cpuN/trace_pipe_raw`` pages
-> records. Pure functions over bytes (the live source reads the pages, tests feed
captured ones).

Why binary and not ``trace_pipe`` text: in the text, the comm of a task_rename or
task_newtask line is printed raw, and a process chooses its comm (any byte but NUL, a
newline included), so a line can be split or forged. In a page every field has its offset
and size from the event's ``format`` file: a comm is a ``char[16]`` array, a pid an int,
and nothing a process writes can move a field. It also removes the kernel's text
formatting and our text parsing from the hot path.

Layouts, all from tracefs itself, never assumed:

* ``events/header_page``: the page header, ``u64 timestamp`` (the time of the page's first
  event), ``local_t commit`` (bytes of data; bit 31 RB_MISSED_EVENTS: events were lost
  before this page, bit 30 RB_MISSED_STORED: their count follows the data as an unsigned
  long), then ``data``;
* ``events/header_event``: each event starts with a u32 ``type_len:5, time_delta:27``.
  type_len 1..28: the data is type_len*4 bytes; 0: a u32 length follows (it counts itself)
  and then the data; 29 padding (time_delta 0: the rest of the page; else a u32 length);
  30 time extend (delta += u32 << 27); 31 absolute time stamp (u32 << 27 | time_delta,
  the upper bits from the running time). As libtraceevent's kbuffer reads them.
* each event's ``format``: ``common_type`` (the event id), ``common_pid`` (the thread),
  then its own fields.

Only little-endian machines are read (x86_64, aarch64, arm, i386): the bitfield order of
the event header follows the machine's byte order.
"""

import re
import struct

TYPE_PADDING = 29
TYPE_TIME_EXTEND = 30
TYPE_TIME_STAMP = 31
RB_MISSED_EVENTS = 1 << 31
RB_MISSED_STORED = 1 << 30
COMMIT_MASK = (1 << 30) - 1
TS_SHIFT = 27
#: Absolute time stamps keep 59 bits; the upper 5 come from the running time (kernel's
#: rb_fix_abs_ts).
TS_MSB_MASK = ~((1 << 59) - 1)

_U32 = struct.Struct("<I")


class RingBufferError(ValueError):
    """A format file or page that cannot be read; ``reason`` is a short label."""

    def __init__(self, reason, detail=""):
        ValueError.__init__(self, reason + (": " + detail if detail else ""))
        self.reason = reason


# -- format files ---------------------------------------------------------------------

class Field(object):
    """One field of an event record, as its format file describes it."""

    __slots__ = ("name", "ctype", "offset", "size", "signed", "array", "data_loc")

    def __init__(self, name, ctype, offset, size, signed, array=None, data_loc=False):
        self.name = name
        self.ctype = ctype
        self.offset = offset
        self.size = size
        self.signed = signed
        self.array = array              # element count of a fixed array (char comm[16])
        self.data_loc = data_loc        # __data_loc: u32 = offset | length << 16

    def __repr__(self):
        return "Field(%s %s @%d/%d)" % (self.ctype, self.name, self.offset, self.size)


class EventFormat(object):
    """An event's ``format`` file: name, id, fields (common ones first)."""

    def __init__(self, name, event_id, fields, system=None):
        self.name = name
        self.id = event_id
        self.fields = fields
        self.system = system
        self.by_name = dict((field.name, field) for field in fields)

    def own_fields(self):
        """The fields after the common_* ones."""
        return [field for field in self.fields if not field.name.startswith("common_")]

    def __repr__(self):
        return "EventFormat(%s id=%d)" % (self.name, self.id)


_FIELD = re.compile(r"^\s*field:\s*(.*?);\s*offset:\s*(\d+);\s*size:\s*(\d+);"
                    r"(?:\s*signed:\s*(\d+);)?")
_DECLARATION = re.compile(r"^(.*?)([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[(\d*)\])?\s*$")


def parse_field(line):
    """One ``field:TYPE NAME;\\toffset:N;\\tsize:N;\\tsigned:N;`` line -> Field, or None."""
    match = _FIELD.match(line)
    if match is None:
        return None
    declaration, offset, size, signed = match.groups()
    data_loc = declaration.startswith("__data_loc ")
    if data_loc:
        declaration = declaration[len("__data_loc "):]
    # "char comm[16]", "unsigned long start", "__data_loc char[] filename",
    # "const struct rlimit64 * new_rlim"
    if data_loc and "[]" in declaration:
        ctype, _, name = declaration.partition("[]")
        return Field(name.strip(), ctype.strip() + "[]", int(offset), int(size),
                     signed == "1", None, True)
    parts = _DECLARATION.match(declaration)
    if parts is None:
        return None
    ctype, name, count = parts.groups()
    array = int(count) if count else None
    return Field(name, ctype.strip(), int(offset), int(size), signed == "1", array, data_loc)


def parse_format(text, system=None):
    """An event's ``format`` file -> EventFormat. Raises RingBufferError."""
    name = event_id = None
    fields = []
    for line in text.splitlines():
        if line.startswith("name:"):
            name = line[5:].strip()
        elif line.startswith("ID:"):
            try:
                event_id = int(line[3:].strip())
            except ValueError:
                raise RingBufferError("bad format file", "ID %r" % line[3:].strip())
        elif "field:" in line:
            field = parse_field(line)
            if field is not None:
                fields.append(field)
    if name is None or event_id is None or not fields:
        raise RingBufferError("bad format file", "no name, ID or fields")
    return EventFormat(name, event_id, fields, system)


class PageLayout(object):
    """Where the page header's fields are (``events/header_page``)."""

    def __init__(self, timestamp_offset=0, commit_offset=8, commit_size=8, data_offset=16,
                 data_size=4080):
        self.timestamp_offset = timestamp_offset
        self.commit_offset = commit_offset
        self.commit_size = commit_size
        self.data_offset = data_offset
        self.data_size = data_size
        self.long_size = commit_size          # local_t is a long
        self.header = struct.Struct("<Q%dx%s" % (commit_offset - timestamp_offset - 8,
                                                 "q" if commit_size == 8 else "i"))
        self.missed = struct.Struct("<Q" if commit_size == 8 else "<I")

    @property
    def page_size(self):
        return self.data_offset + self.data_size


def parse_header_page(text):
    """``events/header_page`` -> PageLayout (timestamp, commit, data)."""
    fields = {}
    for line in text.splitlines():
        field = parse_field(line)
        if field is not None and field.name not in fields:
            fields[field.name] = field
    try:
        timestamp, commit, data = fields["timestamp"], fields["commit"], fields["data"]
    except KeyError as exc:
        raise RingBufferError("bad header_page", "no %s field" % exc)
    if timestamp.offset != 0 or timestamp.size != 8 or commit.size not in (4, 8):
        raise RingBufferError("bad header_page", "unexpected layout")
    return PageLayout(timestamp.offset, commit.offset, commit.size, data.offset, data.size)


# -- pages ----------------------------------------------------------------------------

class Page(object):
    """The events of one page: ``events`` [(ts, data offset, data length)] in the page's
    order (which is time order on one CPU), ``missed``: None, or the number
    of events the kernel overwrote before this page (-1 when it did not store the count)."""

    __slots__ = ("timestamp", "events", "missed", "end_ts")

    def __init__(self, timestamp, events, missed, end_ts):
        self.timestamp = timestamp
        self.events = events
        self.missed = missed
        self.end_ts = end_ts


def read_page(data, layout):
    """Split one page (as one read of trace_pipe_raw returns it) into its events.
    Linear in the page; raises RingBufferError for a page that does not hold together."""
    if len(data) < layout.data_offset:
        raise RingBufferError("short page", "%d bytes" % len(data))
    ts, commit = layout.header.unpack_from(data, 0)
    size = commit & COMMIT_MASK
    start = layout.data_offset
    end = start + size
    if end > len(data):
        raise RingBufferError("bad page", "commit %d beyond %d bytes" % (size, len(data)))
    missed = None
    if commit & RB_MISSED_EVENTS:
        missed = -1
        if commit & RB_MISSED_STORED and end + layout.missed.size <= len(data):
            missed = layout.missed.unpack_from(data, end)[0]
    events = []
    append = events.append
    unpack = _U32.unpack_from
    offset = start
    while offset + 4 <= end:
        word = unpack(data, offset)[0]
        type_len = word & 31
        delta = word >> 5
        if type_len == 0:                               # long event: u32 length first
            if offset + 8 > end:
                raise RingBufferError("bad page", "cut event length")
            length = unpack(data, offset + 4)[0]
            if length < 4:
                raise RingBufferError("bad page", "event length %d" % length)
            ts += delta
            append((ts, offset + 8, length - 4))
            offset += 4 + ((length + 3) & ~3)
        elif type_len <= 28:
            ts += delta
            append((ts, offset + 4, type_len * 4))
            offset += 4 + type_len * 4
        elif type_len == TYPE_TIME_EXTEND:
            if offset + 8 > end:
                raise RingBufferError("bad page", "cut time extend")
            ts += delta | (unpack(data, offset + 4)[0] << TS_SHIFT)
            offset += 8
        elif type_len == TYPE_PADDING:
            if delta == 0:                              # the rest of the page is unused
                break
            if offset + 8 > end:
                raise RingBufferError("bad page", "cut padding")
            ts += delta                                 # a discarded event's time counts
            offset += 4 + unpack(data, offset + 4)[0]
        else:                                           # TYPE_TIME_STAMP: absolute
            if offset + 8 > end:
                raise RingBufferError("bad page", "cut time stamp")
            absolute = delta | (unpack(data, offset + 4)[0] << TS_SHIFT)
            ts = absolute | (ts & TS_MSB_MASK)
            offset += 8
    if offset > end:
        raise RingBufferError("bad page", "event runs past the commit")
    return Page(layout.header.unpack_from(data, 0)[0], events, missed, ts)


def comm_bytes(data, offset, size=16):
    """A ``char comm[16]`` field -> the comm's exact bytes (up to its NUL)."""
    raw = data[offset:offset + size]
    nul = raw.find(b"\0")
    return raw if nul < 0 else raw[:nul]


def data_loc_bytes(data, base, field_offset, limit):
    """A ``__data_loc char[]`` field -> its bytes (without the NUL), or None when the
    location points outside the record (``limit``: the record's end)."""
    loc = _U32.unpack_from(data, base + field_offset)[0]
    start, length = base + (loc & 0xFFFF), loc >> 16
    if start + length > limit or length == 0:
        return None
    raw = data[start:start + length]
    nul = raw.find(b"\0")
    return raw if nul < 0 else raw[:nul]
