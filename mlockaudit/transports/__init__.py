"""Where formatted events go: stdout, files, and (later) syslog. Each transport takes
one formatted message (str, no newline) at a time with ``send`` and owns its framing."""
