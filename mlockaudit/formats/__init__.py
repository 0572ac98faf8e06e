"""Output formats. Each is a pure function Event -> str (one message, no newline)."""

from . import tracee

FORMATS = {
    "tracee": tracee.format_event,
}


def get_formatter(name):
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError("unknown format %r (choose from %s)" % (name, ", ".join(sorted(FORMATS))))
