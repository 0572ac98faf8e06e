"""The read loop both backends run: wait for data (or a signal on the wakeup pipe), pump
it through, and do the periodic work about every 200 ms."""

import select
import time

TICK_SECONDS = 0.2


def run(backend, should_stop, wakeup_fd=None, on_tick=None):
    """Until ``should_stop()`` (or ``backend.finished``): ``backend.pump()`` whenever its
    fd is readable, ``backend.tick(now)`` and ``on_tick()`` every TICK_SECONDS."""
    poller = select.poll()
    if backend.fileno() is not None:
        poller.register(backend.fileno(), select.POLLIN)
    if wakeup_fd is not None:
        poller.register(wakeup_fd, select.POLLIN)
    last_tick = time.monotonic()
    while not should_stop() and not backend.finished:
        poller.poll(TICK_SECONDS * 1000)
        backend.pump()
        now = time.monotonic()
        if now - last_tick >= TICK_SECONDS:
            last_tick = now
            backend.tick(now)
            if on_tick is not None:
                on_tick()
