"""``--coalesce SECONDS``: repeated identical calls leave as one summary, with exact counts.

Why: a SIEM is paid by volume, and a process that calls mlock 50,000 times a second sends
50,000 events that say one thing. Falco once rate-limited alerts silently (and dropped the
limiter after users asked for merging instead); laurel keeps the first per process. Here
nothing is dropped: every call is counted into exactly one record.

How (laurel's coalescer is the model: ``feed(event)``, ``tick(now)``, ``flush()``):

* The first call of a series (its key, below) is emitted at once, unchanged but for
  ``extra["count"] = 1``: no delay for the first sighting.
* Further calls with the same key within ``window`` seconds of that first one are only
  counted. When the window ends (found by ``tick``, which the daemon calls from its read
  loop whether or not events arrive, or by a later event's time), at ``flush`` (stop, end
  of a replay), or when the table of open series is full (the oldest goes first), one
  summary leaves: the first counted call's Event with ``extra["count"] = N - 1`` (the
  calls it stands for), ``firstTimestamp``/``lastTimestamp`` (epoch ns of the first and
  last call it stands for). So the counts of all records of a process add up exactly to
  its calls. A series of one call leaves no summary.

The key, i.e. what "the same call" means: the process (host tgid, the leader's start time
when known, uid, comm and exe, so that a summary's process fields are true of every call
it stands for), the call's name, every argument that is not a pointer (mlock's and
munlock's ``len``, mlock2's ``len`` and ``flags``, mlockall's ``flags``; for calls added
later, e.g. mmap, the same rule: ``length``, ``prot``, ``flags``, ``fd``, ``off``), the
outcome, and the return value of a failure (its errno). Addresses are left out: a storm
locks a new address each time, and keying on them would coalesce nothing. The thread is
left out too (threads of one process are one series); the summary shows the first
counted call's address and thread.

Time: an event's own ``timestamp`` (epoch ns) places it; an event without one (a trace
capture without a clock anchor) takes the coalescer's clock. Loss accounting is not
touched: sources count the calls they lost, transports the messages they lost.
"""

import collections

from . import syscalls
from .compat import time_ns

#: At most this many open series; beyond it the oldest is closed (its summary emitted),
#: never dropped. Each holds one Event and a few ints: 65536 is some 20 MB at worst.
MAX_KEYS = 65536


def _key_positions(name):
    """Indexes of the arguments that are part of a call's key: every non-pointer one."""
    return tuple(index for index, (_arg, c_type) in enumerate(syscalls.ARG_SPECS.get(name, ()))
                 if not c_type.endswith("*"))


class _Series(object):
    __slots__ = ("end", "first", "count", "last_ts")

    def __init__(self, end):
        self.end = end
        self.first = None      # the first counted call (the second of the series)
        self.count = 0
        self.last_ts = None


class Coalescer(object):
    """Between the filters and the outputs: ``feed`` takes every event, ``emit`` gets
    what leaves. ``window``: seconds (float)."""

    def __init__(self, emit, window, max_keys=MAX_KEYS, clock=time_ns):
        if not window > 0:
            raise ValueError("--coalesce takes a window > 0 seconds, not %r" % (window,))
        self.emit = emit
        self.window_ns = int(window * 1000000000)
        self.max_keys = max_keys
        self.clock = clock
        self._open = collections.OrderedDict()     # key -> _Series, oldest first
        self._positions = {}
        self.coalesced = 0     # calls counted into summaries
        self.summaries = 0
        self.evicted = 0       # series closed early because the table was full

    def _key(self, event):
        name = event.name
        positions = self._positions.get(name)
        if positions is None:
            positions = self._positions[name] = _key_positions(name)
        args = event.args
        process = event.process
        ret = event.ret
        return (process.pid, process.start_time, process.uid, process.comm, process.exe,
                name, tuple(args[i] if i < len(args) else None for i in positions),
                event.outcome, ret if ret is not None and ret < 0 else None)

    def feed(self, event):
        now = event.timestamp if event.timestamp is not None else self.clock()
        self._expire(now)
        key = self._key(event)
        series = self._open.get(key)
        if series is None:
            if len(self._open) >= self.max_keys:
                self.evicted += 1
                self._close(self._open.popitem(last=False)[1])
            self._open[key] = _Series(now + self.window_ns)
            extra = dict(event.extra)
            extra["count"] = 1
            self.emit(event.replace(extra=extra))
            return
        if series.first is None:
            series.first = event
        series.count += 1
        series.last_ts = event.timestamp

    def _expire(self, now):
        """Close every series whose window ended before ``now`` (the oldest are first:
        windows are of one length and opened in order)."""
        open_series = self._open
        while open_series:
            key = next(iter(open_series))
            series = open_series[key]
            if series.end > now:
                break
            del open_series[key]
            self._close(series)

    def _close(self, series):
        if not series.count:
            return
        first = series.first
        extra = dict(first.extra)
        extra["count"] = series.count
        extra["firstTimestamp"] = first.timestamp
        extra["lastTimestamp"] = series.last_ts
        self.coalesced += series.count
        self.summaries += 1
        self.emit(first.replace(extra=extra))

    def tick(self, now=None):
        """Close the windows that have ended by ``now`` (epoch ns; default the clock)."""
        self._expire(self.clock() if now is None else now)

    def flush(self):
        """Close every open series (stop, end of a replay)."""
        open_series, self._open = self._open, collections.OrderedDict()
        for series in open_series.values():
            self._close(series)

    def stats(self):
        return {"coalesced": self.coalesced, "summaries": self.summaries,
                "evicted": self.evicted, "open": len(self._open)}
