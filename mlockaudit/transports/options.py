"""Delivery options and the syslog constants they refer to: facilities, ports, the
private enterprise number of the structured data, the UDP size limit."""

from ..formats.common import severities as make_severities
from ..safefiles import FILE_MODE, parse_mode
from .base import TransportError

APP_NAME = "mlockaudit"
DEFAULT_PEN = 32473          # IANA's example enterprise number (RFC 5612)
DEFAULT_PORTS = {"udp": 514, "tcp": 514, "tls": 6514}
UDP_MAX = 2048               # RFC 5426 says 2048 bytes are safe to expect

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13,
    "alert": 14, "clock": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}
DEFAULT_FACILITY = 10        # authpriv: command lines may hold secrets



class OutputOptions(object):
    """Everything about delivery that is not the target string itself (CLI options of
    ``start`` and ``replay``; the defaults are the documented ones)."""

    def __init__(self, spool_dir=None, spool_max_mb=256, tls_ca=None, tls_cert=None,
                 tls_key=None, tls_insecure=False, syslog_pen=None, facility=None,
                 severity_success=None, severity_failure=None, stats_interval=60.0,
                 queue_size=50000, flush_timeout=5.0, connect_timeout=5.0,
                 reconnect_min=0.2, reconnect_max=30.0, udp_max=None, hostname=None,
                 block_when_full=False, file_mode=None, refused_file_is_loss=False):
        self.spool_dir = spool_dir
        # file: outputs: the mode of a new file (0600: events carry command lines)
        try:
            self.file_mode = FILE_MODE if file_mode is None else parse_mode(file_mode)
        except ValueError as exc:
            raise TransportError("--file-mode: %s" % exc)
        # start's SIGHUP: a refused file: output is reported and counted as lost instead
        # of failing the reload (and the run)
        self.refused_file_is_loss = refused_file_is_loss
        if spool_max_mb is None or spool_max_mb <= 0:
            raise TransportError("--spool-max-mb must be > 0")
        self.spool_max_mb = spool_max_mb
        self.tls_ca = tls_ca
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.tls_insecure = tls_insecure
        self.syslog_pen = DEFAULT_PEN if syslog_pen is None else syslog_pen
        if not 0 < self.syslog_pen < 2 ** 31:
            raise TransportError("--syslog-pen must be a positive private enterprise number")
        if facility is None:
            self.facility = DEFAULT_FACILITY
        elif isinstance(facility, int):
            self.facility = facility
        elif str(facility).isdigit():
            self.facility = int(facility)
        elif facility in FACILITIES:
            self.facility = FACILITIES[facility]
        else:
            raise TransportError("unknown syslog facility %r (one of %s)" % (
                facility, ", ".join(FACILITIES)))
        if not 0 <= self.facility <= 23:
            raise TransportError("syslog facility must be 0..23")
        try:
            self.severities = make_severities(severity_success, severity_failure)
        except ValueError as exc:
            raise TransportError(str(exc))
        self.stats_interval = stats_interval
        self.queue_size = queue_size
        self.flush_timeout = flush_timeout
        self.connect_timeout = connect_timeout
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.udp_max = UDP_MAX if udp_max is None else udp_max
        self.hostname = hostname
        # start: a full queue drops (the reader must never wait); replay: it waits
        self.block_when_full = block_when_full
