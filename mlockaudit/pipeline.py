"""The stages between a source and the outputs, built alike for ``start`` and ``replay``:

    source --> detections (detect.py) --------------------------------> outputs
           \\-> filters (filters.py) --> coalescing (coalesce.py) -------^

Detections see every raw call (before the filters and before coalescing, so their
sequences and counts are exact); their findings go to the outputs as they are. The calls
pass the filters, then the coalescer when ``--coalesce`` is on. The usual path (no
filters, no coalescing, no rule that can fire) costs no extra call per event beyond the
detector's.
"""

import os


class Pipeline(object):
    """``emit(event)`` for the source; ``tick(now)`` from the read loop; ``flush()`` at
    stop; ``stats()`` for the summary line."""

    def __init__(self, outputs_emit, event_filter=None, coalesce=None, rules=(),
                 own_pid=None):
        from .coalesce import Coalescer
        from .detect import Detector
        emit = outputs_emit
        self.coalescer = None
        if coalesce:
            self.coalescer = Coalescer(emit, coalesce)
            emit = self.coalescer.feed
        self.filter = event_filter
        if event_filter is not None and event_filter.checks:
            emit = event_filter.wrap(emit)
        self.detector = None
        if rules:
            self.detector = Detector(rules, outputs_emit)
            detect, calls = self.detector.feed, emit
            own = os.getpid() if own_pid is None else own_pid

            def emit(event):
                if event.process.pid != own:       # (a tracer never reports itself)
                    detect(event)
                calls(event)
        self.emit = emit

    def tick(self, now=None):
        if self.coalescer is not None:
            self.coalescer.tick(now)

    def flush(self):
        if self.coalescer is not None:
            self.coalescer.flush()

    def stats(self):
        """{"coalesced": N, "summaries": N, "detections": N, ...} for what is on."""
        out = {}
        if self.coalescer is not None:
            stats = self.coalescer.stats()
            out.update(coalesced=stats["coalesced"], summaries=stats["summaries"])
            if stats["evicted"]:
                out["coalesce_evicted"] = stats["evicted"]
        if self.detector is not None:
            out.update(self.detector.stats())
        return out


def rules_for(options):
    """The detection rules ``options`` ask for (``no_detections``, ``detections``)."""
    if options.get("no_detections"):
        return []
    from .detect import load_rules
    return load_rules(options.get("detections"))
