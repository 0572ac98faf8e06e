"""Output formats. Each is a pure function Event -> str (one message, no newline); the
SIEM formats also take the severity map (outcome -> syslog severity). Each module also
has ``format_stats(stats, severity)`` for the heartbeat message."""

import functools

from . import cef, ecs, leef, tracee
from .common import DEFAULT_SEVERITIES

FORMATS = {
    "tracee": tracee.format_event,
    "ecs": ecs.format_event,
    "cef": cef.format_event,
    "leef": leef.format_event,
}

STATS_FORMATS = {
    "tracee": tracee.format_stats,
    "ecs": ecs.format_stats,
    "cef": cef.format_stats,
    "leef": leef.format_stats,
}

_TAKES_SEVERITIES = ("ecs", "cef", "leef")


def get_formatter(name, severities=None):
    """The Event -> str function of a format, bound to a severity map when the format
    shows severities and the map is not the default."""
    try:
        format_event = FORMATS[name]
    except KeyError:
        raise ValueError("unknown format %r (choose from %s)" % (name, ", ".join(sorted(FORMATS))))
    if severities is not None and severities != DEFAULT_SEVERITIES and name in _TAKES_SEVERITIES:
        return functools.partial(format_event, severities=severities)
    return format_event


def get_stats_formatter(name):
    return STATS_FORMATS[name]
