"""The Source protocol: what every event source implements, and all that the read loop
(loop.py) and the daemon (daemon.py) know about one. The audit backend
(audit/backend.py) and the tracefs backend (tracefs/backend.py) are the two sources;
a third (say, a fanotify or perf one) plugs in by implementing this and nothing else.

The contract, in the order a run calls it:

``__init__(emit, session, options)``
    Builds the source. Changes nothing in the kernel. ``emit(event)`` is where events
    go; ``session`` (state.Session) is the write-ahead record of kernel changes;
    ``options`` a SourceOptions.

``setup() -> str``
    Installs everything (rules, probes, instances, settings), each change recorded in
    the session *before* it is made (via the backend's lifecycle module), and starts
    reading. Returns one line for ``mlockaudit: ready:``. Raises OSError (with a message
    a user can act on) when it cannot; ``stop()`` is then still called.

``fileno() -> int or None``
    The fd to poll for new data, or None to pump on the batch interval only.

``pump() -> int``
    Reads what is there now, never blocks, bounded per call (a storm cannot make one
    call run away with memory). Returns how much it read; ``busy`` says whether it
    stopped at its bound (more is waiting: pump again at once).

``tick(now)``
    Periodic work (about every 200 ms, ``now`` = time.monotonic()): expire calls whose
    end never came, poll loss counters.

``finished``
    True when the input ended by itself (auditd closed the plugin's stdin).

``stop() -> [problem, ...]``
    Stops the kernel producing, reads and emits what is still queued, undoes every
    change of the session, and returns what could not be undone (empty: the host is as
    it was). Safe after a failed or partial setup.

``stats() -> dict``
    Counters, at any time. Common keys: ``backend``, ``mode``, ``events``, ``lost`` (every
    loss this source could observe), ``in_flight``; the rest are the source's own.

``set_emit(emit)``
    Send the next events elsewhere (SIGHUP reload), at no cost per event.
"""


class SourceOptions(object):
    """What a source is asked for (start's options that shape the backend)."""

    def __init__(self, events=None, hostname=None, log=None, input_path=None, probe="auto",
                 buffer_kb=None, batch_ms=None, mmap_exits="all"):
        self.events = events            # event names to report (None: the default set)
        self.hostname = hostname
        self.log = log or (lambda message: None)
        self.input_path = input_path    # audit: auditd's text instead of netlink
        self.probe = probe              # tracefs: auto, tracepoint, kprobe
        self.buffer_kb = buffer_kb      # tracefs: ring buffer per CPU
        self.batch_ms = batch_ms        # the read loop's batch interval (None: default)
        self.mmap_exits = mmap_exits    # tracefs: "all" (pair MAP_LOCKED entries) or "none"


class Source(object):
    """Base of the sources: the shared plumbing of the protocol above."""

    name = None
    finished = False
    busy = False

    def __init__(self, emit, session, options=None):
        self.emit = emit
        self.session = session
        self.options = options or SourceOptions()
        self.log = self.options.log

    def set_emit(self, emit):
        self.emit = emit

    def fileno(self):
        return None

    def tick(self, now):
        pass

    def setup(self):
        raise NotImplementedError

    def pump(self):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def stats(self):
        raise NotImplementedError
