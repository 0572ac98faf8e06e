"""The read loop every Source runs (source.py): wait, pump, and do the periodic work.

Batching, and why: at low rates every record would otherwise wake the reader (audit sends
three datagrams per call), and a wakeup costs more than the record. So the loop pumps at
most once per ``batch_seconds`` while little arrives, taking everything queued at once;
the kernel holds records meanwhile (audit: the socket buffer, then the backlog, where
callers wait rather than lose; tracefs: the ring buffer). When a pump stops at its bound
(``source.busy``: more is waiting, a storm), the next one follows at once: at high rates
nothing waits. The delay an event can see before it is read is at most ``batch_seconds``.

A source with an fd is also woken by it (the first record after a quiet spell is then
read within the batch interval, not at the next tick); a source without one (tracefs,
whose per-CPU pipes would wake only when half full) is pumped on the interval.
SIGTERM/SIGINT/SIGHUP wake the loop through ``wakeup_fd`` at once.
"""

import os
import select
import time

TICK_SECONDS = 0.2
#: The default batch interval, chosen by measurement (scripts/bench, steady 1,000 calls/s:
#: see README's Performance section): the added delay before an event is read.
BATCH_SECONDS = 0.05


def run(source, should_stop, wakeup_fd=None, on_tick=None, batch_seconds=BATCH_SECONDS):
    """Until ``should_stop()`` (or ``source.finished``): pump, tick every TICK_SECONDS."""
    fd = source.fileno()
    waiting = select.poll()               # data or a signal: the first wakeup
    if fd is not None:
        waiting.register(fd, select.POLLIN)
    signals = select.poll()               # a signal only: the batch delay
    if wakeup_fd is not None:
        waiting.register(wakeup_fd, select.POLLIN)
        signals.register(wakeup_fd, select.POLLIN)
    last_tick = last_pump = time.monotonic()
    while not should_stop() and not source.finished:
        now = time.monotonic()
        if not source.busy:
            if fd is not None:
                # sleep until data (or the next tick); then let the batch fill up
                for ready, _ in waiting.poll(max(0.0, last_tick + TICK_SECONDS - now) * 1000):
                    if ready == wakeup_fd:
                        _drain(wakeup_fd)
                now = time.monotonic()
            delay = last_pump + batch_seconds - now
            if fd is None:
                delay = min(delay, last_tick + TICK_SECONDS - now)
            if delay > 0 and not should_stop():
                if signals.poll(delay * 1000):
                    _drain(wakeup_fd)
                now = time.monotonic()
        if should_stop():
            break
        source.pump()
        last_pump = now
        if now - last_tick >= TICK_SECONDS:
            last_tick = now
            source.tick(now)
            if on_tick is not None:
                on_tick()


def _drain(fd):
    """Empty the signal wakeup pipe (signal.set_wakeup_fd writes a byte per signal; the
    pipe is non-blocking): a byte left there would make every poll return at once."""
    if fd is None:
        return
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError, OSError):
        pass
