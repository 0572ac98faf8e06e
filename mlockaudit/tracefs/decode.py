"""Ring-buffer events -> records: syscall tracepoint entries and exits, kprobe and
kretprobe hits, and the task lifecycle (task_newtask, task_rename, sched_process_exec,
sched_process_exit). Pure: the formats come from the instance's ``format`` files, the
pages from ringbuf.read_page.

Every field is read at the offset and size its format file gives (``signed`` decides the
sign), so the same code reads 64-bit and 32-bit kernels, old and new layouts
(sched_process_exit gained ``group_dead`` late; sched_process_fork moved its comms to
``__data_loc``), and no value a process chooses can shift another.

Filtered calls (mmap with MAP_LOCKED, ...): the kernel's event filter keeps only the
locking entries, but an exit tracepoint has only ``ret`` and cannot be filtered by the
entry's arguments, so every plain mmap's exit arrives too. Those are dropped here, before
a record exists: an exit is kept only when its thread has a filtered entry decoded before
it (``armed``: thread id -> entry time). Because the CPUs are read one after the other, a
thread that migrated inside the call can have its exit decoded before its entry (entry on
a CPU read later, or in the next pump): such exits wait, as bare tuples, in ``unarmed``
until :meth:`Decoder.resolve_exits` is given the merge watermark (merge.py): at or below
it every entry that precedes them has been decoded, so one without an armed entry is a
look-alike's and goes.
"""

import struct

from . import ringbuf
from .lines import ENTRY, EXIT, TraceRecord

NEWTASK = "newtask"
RENAME = "rename"
EXEC = "exec"
TASK_EXIT = "task_exit"

CLONE_PARENT = 0x00008000
CLONE_THREAD = 0x00010000

#: What a handler returns for an event it dropped on purpose (not a bad one).
SKIP = object()
#: Threads with a filtered entry in flight: bounded like the pairer's table.
MAX_ARMED = 65536

_INT_CODES = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
              (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}


class TaskRecord(object):
    """One task lifecycle event. ``tid`` is the thread that ran it (common_pid); ``pid``
    the task it is about (the new task, the renamed one, the exec'ing one after exec, the
    exiting one)."""

    __slots__ = ("kind", "ts_ns", "cpu", "tid", "pid", "comm", "old_comm", "clone_flags",
                 "filename", "old_pid", "group_dead")

    def __init__(self, kind, ts_ns, cpu, tid, pid, comm=None, old_comm=None, clone_flags=None,
                 filename=None, old_pid=None, group_dead=None):
        self.kind = kind
        self.ts_ns = ts_ns
        self.cpu = cpu
        self.tid = tid
        self.pid = pid
        self.comm = comm
        self.old_comm = old_comm
        self.clone_flags = clone_flags
        self.filename = filename
        self.old_pid = old_pid
        self.group_dead = group_dead

    def __repr__(self):
        return "TaskRecord(%s ts=%s tid=%s pid=%s comm=%r)" % (
            self.kind, self.ts_ns, self.tid, self.pid, self.comm)


def numeric_struct(fields):
    """A Struct reading the given numeric fields (sorted by offset) of a record in one
    call, with padding between them."""
    parts = ["<"]
    position = 0
    for field in sorted(fields, key=lambda f: f.offset):
        if field.offset < position:
            raise ringbuf.RingBufferError("bad format file", "overlapping field %s" % field.name)
        if field.offset > position:
            parts.append("%dx" % (field.offset - position))
        code = _INT_CODES.get((field.size, field.signed))
        if code is None:
            raise ringbuf.RingBufferError("bad format file", "field %s of %d bytes" % (
                field.name, field.size))
        parts.append(code)
        position = field.offset + field.size
    return struct.Struct("".join(parts)), position


def _common(fmt):
    pid = fmt.by_name.get("common_pid")
    if pid is None or pid.size != 4:
        raise ringbuf.RingBufferError("bad format file", "%s has no common_pid" % fmt.name)
    return pid.offset


class Decoder(object):
    """Turns the events of a page into records, by event id. Register what to read with
    the ``add_*`` methods (the tracefs source does, from the instance's format files)."""

    def __init__(self, layout):
        self.layout = layout
        self._handlers = {}
        self._id_offset = 0                     # common_type: u16 at offset 0 everywhere
        self.unknown = 0                        # events of ids nobody registered
        self.bad = 0                            # events too short for their format
        self.armed = {}                         # tid -> ts of a filtered entry in flight
        # (ts, tid, cpu, page, offset, build) of exits without an armed entry, until
        # resolve_exits: bounded by one pump's read (MAX_PAGES_PER_PUMP pages per CPU),
        # plus the few newer than the watermark that wait for the next pump
        self.unarmed = []
        self.exits_dropped = 0                  # exits of look-alikes (no filtered entry)

    def ids(self):
        return set(self._handlers)

    # -- registration ---------------------------------------------------------------------

    def add_syscall_enter(self, fmt, name, arch=None, filtered=False):
        """``syscalls/sys_enter_NAME``: the arguments in the format's order (which is the
        syscall's, and Tracee's). ``filtered``: the kernel's event filter passes only
        locking entries; each one arms its thread for its exit (see the module doc)."""
        pid_at = _common(fmt)
        args = [field for field in fmt.own_fields() if field.name != "__syscall_nr"]
        values, size = numeric_struct(args) if args else (None, 0)
        values_at = min(field.offset for field in args) if args else 0
        if values is not None:
            values, size = numeric_struct([ringbuf.Field(f.name, f.ctype, f.offset - values_at,
                                                         f.size, False) for f in args])
        need = values_at + size
        pid_struct = struct.Struct("<%dxi" % pid_at)

        def handle(data, offset, length, ts, cpu):
            if length < need:
                return None
            tid = pid_struct.unpack_from(data, offset)[0]
            arg_values = values.unpack_from(data, offset + values_at) if values else ()
            if filtered:
                self._arm(tid, ts)
            return TraceRecord(ENTRY, name, tid, None, None, cpu, ts, arg_values, None, arch)
        self._handlers[fmt.id] = handle

    def add_syscall_exit(self, fmt, name, arch=None, filtered=False):
        """``syscalls/sys_exit_NAME``: ``long ret``. ``filtered``: the entries are filtered
        in the kernel, the exits cannot be: only exits of armed threads become records."""
        pid_at = _common(fmt)
        ret = fmt.by_name.get("ret")
        if ret is None:
            raise ringbuf.RingBufferError("bad format file", "%s has no ret" % fmt.name)
        reader = struct.Struct("<%s" % _INT_CODES[(ret.size, True)])
        pid_struct = struct.Struct("<%dxi" % pid_at)
        need = ret.offset + ret.size

        if filtered:
            self._handlers[fmt.id] = self._filtered_exit(name, arch, None, pid_struct, reader,
                                                         ret.offset, need)
            return

        def handle(data, offset, length, ts, cpu):
            if length < need:
                return None
            return TraceRecord(EXIT, name, pid_struct.unpack_from(data, offset)[0], None, None,
                               cpu, ts, None, reader.unpack_from(data, offset + ret.offset)[0],
                               arch)
        self._handlers[fmt.id] = handle

    def _arm(self, tid, ts):
        armed = self.armed
        if len(armed) >= MAX_ARMED and tid not in armed:
            del armed[next(iter(armed))]          # (a thread killed inside its call)
        armed[tid] = ts

    def _filtered_exit(self, name, arch, probe, pid_struct, reader, ret_at, need):
        """The hot path of every plain mmap: the thread id and one dict lookup; a
        look-alike's exit is kept only as (ts, tid, cpu, page, offset, build) until the
        watermark passes it: its return is read only if its entry turns up."""
        armed = self.armed
        unarmed = self.unarmed
        get = armed.get
        tid_of = pid_struct.unpack_from

        def build(data, offset, ts, cpu, tid):
            return TraceRecord(EXIT, name, tid, None, None, cpu, ts, None,
                               reader.unpack_from(data, offset + ret_at)[0], arch, probe=probe)

        def handle(data, offset, length, ts, cpu):
            if length < need:
                return None
            tid = tid_of(data, offset)[0]
            entry_ts = get(tid)
            if entry_ts is not None and entry_ts <= ts:
                del armed[tid]
                return build(data, offset, ts, cpu, tid)
            unarmed.append((ts, tid, cpu, data, offset, build))
            return SKIP
        return handle

    def resolve_exits(self, watermark):
        """Exits decoded before their thread's filtered entry -> [(cpu, record)] for the
        ones whose entry has arrived since; drops the rest at or below ``watermark`` (None:
        end of input, drop all unmatched); keeps the newer ones for the next call."""
        unarmed = self.unarmed
        if not unarmed:
            return []
        armed = self.armed
        found = []
        if armed:
            rest = []
            for item in unarmed:
                ts, tid = item[0], item[1]
                entry_ts = armed.get(tid)
                if entry_ts is not None and entry_ts <= ts:
                    del armed[tid]
                    found.append((item[2], item[5](item[3], item[4], ts, item[2], tid)))
                else:
                    rest.append(item)
            unarmed = rest
        keep = [item for item in unarmed if item[0] > watermark] if watermark is not None \
            else []
        self.exits_dropped += len(unarmed) - len(keep)
        self.unarmed[:] = keep
        return found

    def add_kprobe(self, fmt, name, arch, arg_fields, arch_of_number=None, filtered=False):
        """A kprobe on a syscall entry: the fields named in ``arg_fields`` (Tracee's order;
        absent ones read as None), and ``orig_ax`` -> arch through ``arch_of_number``
        where one probe serves two arches."""
        pid_at = _common(fmt)
        present = [fmt.by_name[field] for field in arg_fields if field in fmt.by_name]
        orig_ax = fmt.by_name.get("orig_ax") if arch_of_number else None
        order = sorted(present + ([orig_ax] if orig_ax is not None else []),
                       key=lambda field: field.offset)
        values, need = numeric_struct(order) if order else (None, 0)
        names = [field.name for field in order]
        positions = [names.index(field) if field in names else None for field in arg_fields]
        ax_position = names.index("orig_ax") if orig_ax is not None else None
        pid_struct = struct.Struct("<%dxi" % pid_at)

        def handle(data, offset, length, ts, cpu):
            if length < need:
                return None
            got = values.unpack_from(data, offset) if values else ()
            args = tuple(got[p] if p is not None else None for p in positions)
            call_arch = arch
            if ax_position is not None:
                call_arch = arch_of_number.get(got[ax_position], arch)
            tid = pid_struct.unpack_from(data, offset)[0]
            if filtered:
                self._arm(tid, ts)
            return TraceRecord(ENTRY, name, tid, None, None, cpu, ts, args, None, call_arch,
                               probe="kprobe")
        self._handlers[fmt.id] = handle

    def add_kretprobe(self, fmt, name, arch, filtered=False):
        """A kretprobe: ``ret`` (fetched as s64). ``filtered``: as for syscall exits."""
        pid_at = _common(fmt)
        ret = fmt.by_name.get("ret")
        if ret is None:
            raise ringbuf.RingBufferError("bad format file", "%s has no ret" % fmt.name)
        reader = struct.Struct("<%s" % _INT_CODES[(ret.size, ret.signed)])
        pid_struct = struct.Struct("<%dxi" % pid_at)
        need = ret.offset + ret.size
        if filtered:
            self._handlers[fmt.id] = self._filtered_exit(name, arch, "kprobe", pid_struct,
                                                         reader, ret.offset, need)
            return

        def handle(data, offset, length, ts, cpu):
            if length < need:
                return None
            return TraceRecord(EXIT, name, pid_struct.unpack_from(data, offset)[0], None, None,
                               cpu, ts, None, reader.unpack_from(data, offset + ret.offset)[0],
                               arch, probe="kprobe")
        self._handlers[fmt.id] = handle

    def add_task_newtask(self, fmt):
        _common(fmt)
        pid, comm, flags = (fmt.by_name.get(n) for n in ("pid", "comm", "clone_flags"))
        if pid is None or comm is None or flags is None:
            raise ringbuf.RingBufferError("bad format file", "task_newtask fields")
        numbers, _ = numeric_struct([fmt.by_name["common_pid"], pid, flags])
        need = max(pid.offset + pid.size, comm.offset + comm.size, flags.offset + flags.size)
        order = [field.name for field in sorted((fmt.by_name["common_pid"], pid, flags),
                                                key=lambda f: f.offset)]
        tid_i, pid_i, flags_i = order.index("common_pid"), order.index("pid"), \
            order.index("clone_flags")
        comm_at, comm_size = comm.offset, comm.size

        def handle(data, offset, length, ts, cpu):
            if length < need:
                return None
            got = numbers.unpack_from(data, offset)
            return TaskRecord(NEWTASK, ts, cpu, got[tid_i], got[pid_i],
                              comm=ringbuf.comm_bytes(data, offset + comm_at, comm_size),
                              clone_flags=got[flags_i])
        self._handlers[fmt.id] = handle

    def add_task_rename(self, fmt):
        pid_at = _common(fmt)
        pid = fmt.by_name.get("pid")
        old, new = fmt.by_name.get("oldcomm"), fmt.by_name.get("newcomm")
        if old is None or new is None:
            raise ringbuf.RingBufferError("bad format file", "task_rename fields")
        pid_struct = struct.Struct("<%dxi" % pid_at)
        # newer kernels dropped the pid field: the renamed task is then the current one
        target = struct.Struct("<%dx%s" % (pid.offset, _INT_CODES[(pid.size, True)])) \
            if pid is not None else None
        need = max(old.offset + old.size, new.offset + new.size)

        def handle(data, offset, length, ts, cpu):
            if length < need:
                return None
            tid = pid_struct.unpack_from(data, offset)[0]
            return TaskRecord(RENAME, ts, cpu, tid,
                              target.unpack_from(data, offset)[0] if target else tid,
                              comm=ringbuf.comm_bytes(data, offset + new.offset, new.size),
                              old_comm=ringbuf.comm_bytes(data, offset + old.offset, old.size))
        self._handlers[fmt.id] = handle

    def add_sched_process_exec(self, fmt):
        _common(fmt)
        filename, pid, old_pid = (fmt.by_name.get(n) for n in ("filename", "pid", "old_pid"))
        if filename is None or pid is None or old_pid is None:
            raise ringbuf.RingBufferError("bad format file", "sched_process_exec fields")
        numbers, need = numeric_struct([fmt.by_name["common_pid"], pid, old_pid])
        order = [field.name for field in sorted((fmt.by_name["common_pid"], pid, old_pid),
                                                key=lambda f: f.offset)]
        tid_i, pid_i, old_i = order.index("common_pid"), order.index("pid"), \
            order.index("old_pid")
        need = max(need, filename.offset + 4)

        def handle(data, offset, length, ts, cpu):
            if length < need:
                return None
            got = numbers.unpack_from(data, offset)
            name = ringbuf.data_loc_bytes(data, offset, filename.offset, offset + length) \
                if filename.data_loc else ringbuf.comm_bytes(data, offset + filename.offset,
                                                             filename.size)
            return TaskRecord(EXEC, ts, cpu, got[tid_i], got[pid_i], filename=name,
                              old_pid=got[old_i])
        self._handlers[fmt.id] = handle

    def add_sched_process_exit(self, fmt):
        _common(fmt)
        pid, comm = fmt.by_name.get("pid"), fmt.by_name.get("comm")
        dead = fmt.by_name.get("group_dead")
        if pid is None:
            raise ringbuf.RingBufferError("bad format file", "sched_process_exit fields")
        numeric = [fmt.by_name["common_pid"], pid] + ([dead] if dead is not None else [])
        numbers, need = numeric_struct(numeric)
        order = [field.name for field in sorted(numeric, key=lambda f: f.offset)]
        tid_i, pid_i = order.index("common_pid"), order.index("pid")
        dead_i = order.index("group_dead") if dead is not None else None

        def handle(data, offset, length, ts, cpu):
            if length < need:
                return None
            got = numbers.unpack_from(data, offset)
            return TaskRecord(TASK_EXIT, ts, cpu, got[tid_i], got[pid_i],
                              comm=ringbuf.comm_bytes(data, offset + comm.offset, comm.size)
                              if comm is not None else None,
                              group_dead=bool(got[dead_i]) if dead_i is not None else None)
        self._handlers[fmt.id] = handle

    # -- pages --------------------------------------------------------------------------

    def decode(self, data, cpu):
        """One page -> (records in time order, missed events or None, last timestamp)."""
        page = ringbuf.read_page(data, self.layout)
        handlers = self._handlers
        records = []
        append = records.append
        unknown = 0
        for ts, offset, length in page.events:
            if length < 8:
                self.bad += 1
                continue
            handler = handlers.get(data[offset] | (data[offset + 1] << 8))
            if handler is None:
                unknown += 1
                continue
            record = handler(data, offset, length, ts, cpu)
            if record is None:
                self.bad += 1
            elif record is not SKIP:
                append(record)
        self.unknown += unknown
        return records, page.missed, page.end_ts
