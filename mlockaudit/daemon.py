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

from . import cleanup as cleanup_module
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


def make_backend(name, emit, session, events, hostname, input_path=None, probe="auto",
                 buffer_kb=None):
    if name == "audit":
        from .audit.source import AuditBackend
        return AuditBackend(emit, session, events=events, hostname=hostname, log=_say,
                            input_path=input_path)
    if name == "tracefs":
        if input_path is not None:
            raise StartError("--input reads auditd's text: it needs --backend audit")
        from .tracefs.source import TracefsBackend
        return TracefsBackend(emit, session, events=events, hostname=hostname, log=_say,
                              probe=probe, buffer_kb=buffer_kb)
    raise StartError("unknown backend %r" % name)


class Daemon(object):
    def __init__(self, backend_name, outputs, events=None, input_path=None, probe="auto",
                 buffer_kb=None):
        self.backend_name = backend_name
        self.outputs = outputs
        self.events = events
        self.input_path = input_path
        self.probe = probe
        self.buffer_kb = buffer_kb
        self._stop = False
        self._reopen = False
        self.backend = None

    def _on_stop(self, signum, frame):
        self._stop = True

    def _on_hup(self, signum, frame):
        self._reopen = True

    def _tick(self):
        if self._reopen:
            self._reopen = False
            self.outputs.reopen()
        self.outputs.flush()

    def run(self):
        lock = InstanceLock()
        try:
            lock.acquire()
        except AlreadyRunning as exc:
            raise StartError(str(exc))
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        old_handlers = {}
        session = None
        problems = []
        try:
            for line in cleanup_module.cleanup_stale(log=_say):
                _say("cleanup of a previous run: " + line)
            for signum, handler in ((signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop),
                                    (signal.SIGHUP, self._on_hup)):
                old_handlers[signum] = signal.signal(signum, handler)
            old_wakeup = signal.set_wakeup_fd(wake_w)
            if self.backend_name == "auto":
                self.backend_name = "audit" if self.input_path else select_backend()
            session = Session()
            session.commit()
            self.backend = make_backend(self.backend_name, self.outputs.emit, session,
                                        self.events, os.uname().nodename, self.input_path,
                                        self.probe, self.buffer_kb)
            try:
                description = self.backend.setup()
            except BaseException:
                problems += self.backend.stop()
                raise
            _say("ready: " + description)
            try:
                self.backend.run(lambda: self._stop, wakeup_fd=wake_r, on_tick=self._tick)
            finally:
                problems += self.backend.stop()
                self.outputs.flush()
            signal.set_wakeup_fd(old_wakeup)
        finally:
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            os.close(wake_r)
            os.close(wake_w)
            if session is not None and not problems:
                session.finish()
            lock.release()
            if self.backend is not None:
                stats = self.backend.stats()
                details = " ".join("%s=%s" % (key, value) for key, value in stats.items()
                                   if key not in ("events", "lost"))
                _say("stopped: events=%d lost=%d (%s)" % (stats["events"], stats["lost"], details))
            for problem in problems:
                _say("PROBLEM: " + problem)
        return 1 if problems else 0
