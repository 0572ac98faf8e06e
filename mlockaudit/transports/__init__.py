"""Where formatted events go: stdout, files, and syslog. Each transport takes one
formatted message (str, no newline) at a time with ``send(message, event)`` (the Event is
there for framing that depends on it, e.g. a syslog MSGID or severity) and owns its
framing; ``flush()``, ``reopen()`` (SIGHUP) and ``close()`` complete the interface."""
