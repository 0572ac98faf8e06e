"""systemd's readiness protocol (sd_notify) without libsystemd: one datagram to the socket
named in $NOTIFY_SOCKET. With Type=notify, ``systemctl start`` returns when tracing
works (READY=1), not when the process merely started. Silent when not under systemd."""

import os
import socket


def notify(state, environ=None):
    """Send e.g. ``READY=1`` or ``STOPPING=1``; returns True when a socket took it."""
    path = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):                     # abstract namespace
        path = "\0" + path[1:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.connect(path)
        sock.sendall(state.encode())
        return True
    except OSError:
        return False
    finally:
        sock.close()
