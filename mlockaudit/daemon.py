"""``mlockaudit start``: take the instance lock, clean up after a crashed run, set up the
backend, pump events to the outputs until SIGTERM/SIGINT, undo everything, summarize.

The process runs in the foreground (systemd style). Lines on stderr:
``mlockaudit: ready: ...`` once events flow, ``mlockaudit: stopped: events=N lost=M ...``
at the end. Exit status: 0 after a clean stop, 1 when setup failed or something could not
be undone (the message says what), 2 for usage errors.
"""

import os
import signal
import sys

from . import cleanup as cleanup_module, loop
from .notify import notify
from .pipeline import Pipeline, rules_for
from .source import SourceOptions
from .state import AlreadyRunning, InstanceLock, Session


class StartError(Exception):
    """start cannot run; the message says what to change."""


def _say(message):
    sys.stderr.write("mlockaudit: %s\n" % message)
    sys.stderr.flush()


def select_backend():
    """``--backend auto``: the doctor's choice, said on stderr with its reason."""
    from .doctor import probe_host
    report = probe_host()
    if report["selected"] is None:
        raise StartError(report["why"])
    _say("backend %s: %s" % (report["selected"], report["why"]))
    return report["selected"]


#: The sources ``--backend`` names (module, class), imported when chosen.
SOURCES = {"audit": ("mlockaudit.audit.backend", "AuditSource"),
           "tracefs": ("mlockaudit.tracefs.backend", "TracefsSource")}


def make_source(name, emit, session, options):
    """The Source ``name`` (source.py), built with ``options`` (a SourceOptions)."""
    import importlib
    if name not in SOURCES:
        raise StartError("unknown backend %r" % name)
    if name != "audit" and options.input_path is not None:
        raise StartError("--input reads auditd's text: it needs --backend audit")
    module, cls = SOURCES[name]
    return getattr(importlib.import_module(module), cls)(emit, session, options)


#: Options that shape the backend: changing them needs a restart, not a SIGHUP.
BACKEND_OPTIONS = ("backend", "probe", "events", "input_path", "buffer_kb", "batch_ms",
                   "mmap_exits")
FILTER_OPTIONS = ("include_uid", "exclude_uid", "include_comm", "exclude_comm", "include_exe",
                  "exclude_exe", "include_pid", "exclude_pid", "failures_only")


def make_filter(options):
    from .filters import EventFilter
    return EventFilter(**{key: options.get(key) or () for key in FILTER_OPTIONS
                          if key != "failures_only"},
                       failures_only=bool(options.get("failures_only")))


class Daemon(object):
    """One ``start``. ``options``: the start options (see cli.py); ``open_outputs``:
    (options, reopening=False) -> Outputs (``reopening``: a refused file output is counted
    as lost rather than raised); ``reload``: a callable returning fresh options on SIGHUP
    (the config file read again), or None."""

    def __init__(self, options, open_outputs, reload=None):
        self.options = options
        self.backend_name = options.get("backend") or "auto"
        self.open_outputs = open_outputs
        self.outputs = open_outputs(options)
        self.filter = make_filter(options)
        self.rules = rules_for(options)
        self.pipeline = None
        self.reload = reload
        self._stop = False
        self._hup = False
        self.source = None

    def _on_stop(self, signum, frame):
        self._stop = True

    def _on_hup(self, signum, frame):
        self._hup = True

    def _emit_for(self, outputs, event_filter, options=None, rules=None):
        """The function events go to: the pipeline (pipeline.py: detections, filters,
        coalescing) in front of the outputs."""
        options = self.options if options is None else options
        self.pipeline = Pipeline(outputs.emit, event_filter, coalesce=options.get("coalesce"),
                                 rules=self.rules if rules is None else rules)
        return self.pipeline.emit

    def _tick(self):
        if self._hup:
            self._hup = False
            self._reload()
        if self.pipeline is not None:           # (None until start wires the source)
            self.pipeline.tick()
        self.outputs.flush()

    def _reload(self):
        """SIGHUP: reopen the output files (logrotate); reread the configuration and apply
        what can change while running (outputs, format, filters). The outputs are opened
        again either way (reopened, or rebuilt from the new configuration); a file output
        that is refused now (its path replaced by a link, ...) is said here and counts
        its events as lost until a later SIGHUP opens it: the run goes on."""
        if self.reload is None:
            self._reopen_outputs()
            return
        try:
            options = self.reload()
            event_filter = make_filter(options)
            rules = rules_for(options)
        except Exception as exc:                  # a bad new config: keep the running one
            _say("reload failed, the running configuration stays: %s" % exc)
            self._reopen_outputs()
            return
        restart = [key for key in BACKEND_OPTIONS if options.get(key) != self.options.get(key)]
        if restart:
            _say("reload: %s changed; that takes a restart (not applied)" % ", ".join(restart))
            for key in BACKEND_OPTIONS:
                options[key] = self.options.get(key)
        # the old outputs go first: a spool directory is locked by its owner; what the
        # coalescer holds leaves through them (counts stay exact across a reload)
        if self.pipeline is not None:
            self.pipeline.flush()
        self._retire_outputs()
        try:
            outputs = self.open_outputs(options, reopening=True)
        except Exception as exc:
            _say("reload: the new outputs cannot be opened (%s); back to the running ones" % exc)
            options, event_filter, rules = self.options, self.filter, self.rules
            outputs = self.open_outputs(options, reopening=True)
        for problem in outputs.refused:
            _say("reopen: " + problem)
        self._retired_pipeline = self._pipeline_stats()
        self.outputs, self.filter, self.options, self.rules = outputs, event_filter, options, rules
        self.source.set_emit(self._emit_for(outputs, event_filter))
        self._start_heartbeat()
        _say("reload: configuration applied")

    def _reopen_outputs(self):
        for problem in self.outputs.reopen():
            _say("reopen: " + problem)

    def _pipeline_stats(self):
        """The pipeline's counters, those of pipelines retired by reloads included."""
        total = dict(getattr(self, "_retired_pipeline", {}))
        if self.pipeline is not None:
            for key, value in self.pipeline.stats().items():
                total[key] = total.get(key, 0) + value
        return total

    def _retire_outputs(self):
        """Flush and close the current outputs, keeping their delivery counters."""
        self.outputs.flush()
        self.outputs.close()
        self._retired_lost = getattr(self, "_retired_lost", 0) + self.outputs.stats()["lost"]

    def _heartbeat_stats(self):
        stats = self.source.stats()
        return {"events": stats["events"], "lost": stats["lost"], "backend": self.backend_name,
                "mode": stats.get("mode"), "in_flight": stats.get("in_flight", 0)}

    def _start_heartbeat(self):
        self.outputs.start_heartbeat(self._heartbeat_stats)

    def run(self):
        lock = InstanceLock()
        try:
            lock.acquire()
        except AlreadyRunning as exc:
            raise StartError(str(exc))
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        old_handlers = {}
        session = None
        problems = []
        options = self.options
        try:
            for line in cleanup_module.cleanup_stale(log=_say):
                _say("cleanup of a previous run: " + line)
            for signum, handler in ((signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop),
                                    (signal.SIGHUP, self._on_hup)):
                old_handlers[signum] = signal.signal(signum, handler)
            old_wakeup = signal.set_wakeup_fd(wake_w)
            if self.backend_name == "auto":
                self.backend_name = "audit" if options.get("input_path") else select_backend()
            session = Session()
            session.commit()
            self.source = make_source(
                self.backend_name, self._emit_for(self.outputs, self.filter), session,
                SourceOptions(events=options.get("events"), hostname=os.uname().nodename,
                              log=_say, input_path=options.get("input_path"),
                              probe=options.get("probe") or "auto",
                              buffer_kb=options.get("buffer_kb"),
                              batch_ms=options.get("batch_ms"),
                              mmap_exits=options.get("mmap_exits") or "all"))
            try:
                description = self.source.setup()
            except BaseException:
                problems += self.source.stop()
                raise
            _say("ready: " + description)
            notify("READY=1\nSTATUS=tracing with %s" % self.backend_name)
            self._start_heartbeat()
            try:
                batch_ms = options.get("batch_ms")
                loop.run(self.source, lambda: self._stop, wakeup_fd=wake_r,
                         on_tick=self._tick, batch_seconds=(
                             loop.BATCH_SECONDS if batch_ms is None else batch_ms / 1000.0))
            finally:
                notify("STOPPING=1")
                problems += self.source.stop()
                self.pipeline.flush()             # the coalescer's open series leave
                self.outputs.flush()
                self.outputs.close()          # delivers what is queued, within a deadline
            signal.set_wakeup_fd(old_wakeup)
        finally:
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            os.close(wake_r)
            os.close(wake_w)
            if session is not None and not problems:
                session.finish()
            lock.release()
            if self.source is not None:
                stats = self.source.stats()
                delivery_lost = self.outputs.stats()["lost"] + getattr(self, "_retired_lost", 0)
                details = " ".join("%s=%s" % (key, value) for key, value in stats.items()
                                   if key not in ("events", "lost"))
                if self.filter.dropped:
                    details += " filtered=%d" % self.filter.dropped
                for key, value in self._pipeline_stats().items():
                    details += " %s=%d" % (key, value)
                details += " delivery_lost=%d" % delivery_lost
                _say("stopped: events=%d lost=%d (%s)" % (
                    stats["events"], stats["lost"] + delivery_lost, details))
                summary = self.outputs.summary()
                if summary:
                    _say("delivery: " + summary)
            for problem in problems:
                _say("PROBLEM: " + problem)
        return 1 if problems else 0
