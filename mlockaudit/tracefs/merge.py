"""Per-CPU ring buffers -> one stream in time order. Pure.

Each CPU's buffer is in time order, but the CPUs are read one after the other: a fork on
CPU 0 and the child's first call on CPU 1 arrive in separate reads, and the model of
tasks (tasks.py) must see the fork first. So records wait here until no CPU can still
deliver an older one, then leave merged by timestamp:

* a CPU whose buffer was read empty (EAGAIN) can only deliver records newer than the
  moment the read started, minus the few microseconds an event can sit between its
  timestamp (taken at reserve) and its commit; ``margin_ns`` covers that;
* a CPU that still had data (the read stopped at the per-pump cap) can deliver records
  from its last timestamp on.

The release point (the watermark) is the minimum over CPUs. Records at or before it are
released in order; ties keep CPU order. Bounded: ``max_held`` records; past it the oldest
are released even early (counted in ``forced``), because holding more would only trade
memory for ordering the model no longer needs after a loss anyway.
"""

import heapq


class Merger(object):
    def __init__(self, margin_ns=2000000, max_held=65536):
        self.margin_ns = margin_ns
        self.max_held = max_held
        self._held = {}              # cpu -> list of records (time order)
        self._frontier = {}          # cpu -> the oldest time it may still deliver
        self.held = 0
        self.forced = 0

    def add(self, cpu, records, drained, read_start_ns, last_ts=None):
        """Records read from ``cpu`` (in its order). ``drained``: the read ended with the
        buffer empty; ``read_start_ns``: the trace clock when that read began;
        ``last_ts``: the newest timestamp of the read (None: no record)."""
        if records:
            self._held.setdefault(cpu, []).extend(records)
            self.held += len(records)
        if drained:
            self._frontier[cpu] = read_start_ns - self.margin_ns
        elif last_ts is not None:
            self._frontier[cpu] = last_ts
        elif cpu not in self._frontier:
            self._frontier[cpu] = read_start_ns - self.margin_ns

    def watermark(self):
        """The time up to which no CPU can still deliver an older record (None: no CPU
        read yet)."""
        return min(self._frontier.values()) if self._frontier else None

    def insert(self, cpu, record):
        """One record that arrives late for its CPU (an exit held until its entry was
        decoded, see decode.resolve_exits): put in its place by time."""
        records = self._held.setdefault(cpu, [])
        records.insert(_count_upto(records, record.ts_ns), record)
        self.held += 1

    def release(self, final=False):
        """Records that can no longer be preceded by an unread one, in time order (all of
        them when ``final``)."""
        if not self.held:
            return []
        watermark = None if final else min(self._frontier.values()) if self._frontier else None
        if self.held > self.max_held and not final:
            # too much held: release the oldest half regardless (counted)
            everything = sorted((r for rs in self._held.values() for r in rs),
                                key=_ts)
            cut = everything[len(everything) // 2].ts_ns
            watermark = cut if watermark is None else max(watermark, cut)
            self.forced += 1
        ready = []
        for cpu, records in self._held.items():
            if watermark is None:
                ready.append(records)
                self._held[cpu] = []
                continue
            count = _count_upto(records, watermark)
            if count:
                ready.append(records[:count])
                del records[:count]
        out = ready[0] if len(ready) == 1 else list(heapq.merge(*ready, key=_ts)) \
            if ready else []
        self.held -= len(out)
        return out


def _ts(record):
    return record.ts_ns


def _count_upto(records, watermark):
    """How many leading records have ts <= watermark (records are in time order)."""
    low, high = 0, len(records)
    if high and records[-1].ts_ns <= watermark:
        return high
    while low < high:
        middle = (low + high) // 2
        if records[middle].ts_ns <= watermark:
            low = middle + 1
        else:
            high = middle
    return low
