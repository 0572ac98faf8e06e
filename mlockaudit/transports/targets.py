"""Syslog target strings (``syslog:[PATH]``, ``syslog+udp|tcp|tls://HOST[:PORT]``) -> (kind,
address), and the TLS context of ``syslog+tls``."""

import ssl

from ..compat import require_tls12
from .base import TransportError
from .options import DEFAULT_PORTS

def parse_target(target):
    """``syslog:`` / ``syslog:PATH`` / ``syslog+udp|tcp|tls://HOST[:PORT]`` ->
    (kind, address) with address a path or (host, port)."""
    if target == "syslog:" or target == "syslog":
        return "unix", "/dev/log"
    if target.startswith("syslog:") and not target.startswith("syslog://"):
        return "unix", target[len("syslog:"):]
    for kind in ("udp", "tcp", "tls"):
        prefix = "syslog+%s://" % kind
        if target.startswith(prefix):
            rest = target[len(prefix):].rstrip("/")
            if rest.startswith("["):
                host, _, port = rest[1:].partition("]")
                port = port[1:] if port.startswith(":") else port
            elif rest.count(":") == 1:
                host, _, port = rest.partition(":")
            else:
                host, port = rest, ""
            if not host:
                raise TransportError("%s needs a host, e.g. %s127.0.0.1:%d" % (
                    target, prefix, DEFAULT_PORTS[kind]))
            try:
                number = int(port) if port else DEFAULT_PORTS[kind]
            except ValueError:
                raise TransportError("%s: port %r is not a number" % (target, port))
            if not 0 < number < 65536:
                raise TransportError("%s: port %d out of range" % (target, number))
            return kind, (host, number)
    raise TransportError("unknown syslog target %r" % target)


def tls_context(ca_file=None, cert_file=None, key_file=None, insecure=False):
    """The client context: verifies the collector's certificate and name unless
    ``insecure``; ``ca_file`` replaces the system CAs; an optional client certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    require_tls12(context)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    elif key_file:
        raise TransportError("--tls-key needs --tls-cert")
    return context
