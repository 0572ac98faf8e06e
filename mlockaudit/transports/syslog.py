"""The syslog sender: one per target. ``send(message, event)`` never blocks the reader:
it appends to a bounded in-memory queue (a full queue drops the new message and counts it)
and one sender thread per transport frames (rfc5424.py) and writes. The sender reconnects
with exponential backoff when the collector goes away; with a spool (``--spool DIR``) it
moves what it cannot deliver to disk and sends it, oldest first, once the collector is
back. ``close()`` flushes with a deadline: what is still undelivered then goes to the
spool, or is counted as dropped.

On the wire: TCP and TLS use RFC 6587 octet counting (``LEN SP MSG``), UDP one datagram
per message (cut to fit, see rfc5424.Framer.frame), the local socket one datagram in the
syslog(3) form.
"""

import collections
import errno
import os
import select
import socket
import ssl
import threading
import time

from .base import Transport, TransportError
from .options import OutputOptions
from .rfc5424 import Framer, sd_value
from .spool import Spool
from .targets import parse_target, tls_context



class _Deadline(Exception):
    pass


class SyslogTransport(Transport):
    """One syslog target: a bounded queue, a sender thread, an optional disk spool."""

    takes_stats = True

    def __init__(self, target, options=None, formatter=None):
        self.options = options = options or OutputOptions()
        self.name = target
        self.kind, self.address = parse_target(target)
        self.formatter = formatter
        self.framer = Framer(self.kind, pen=options.syslog_pen, facility=options.facility,
                             severities=options.severities, hostname=options.hostname)
        self._limit = options.udp_max if self.kind == "udp" else None
        self._context = None
        if self.kind == "tls":
            try:
                self._context = tls_context(options.tls_ca, options.tls_cert, options.tls_key,
                                            options.tls_insecure)
            except (OSError, ssl.SSLError) as exc:
                raise TransportError("%s: TLS setup: %s" % (target, exc))
        self.spool = None
        if options.spool_dir and self.kind != "udp":
            directory = os.path.join(options.spool_dir, _spool_name(self.kind, self.address))
            try:
                self.spool = Spool(directory, options.spool_max_mb * 1024 * 1024)
            except OSError as exc:
                raise TransportError(str(exc))
        self._queue = collections.deque()
        self._queue_max = options.queue_size
        self._block = options.block_when_full   # replay: wait instead of dropping
        self._room = threading.Event()
        self._framed = collections.deque()   # framed, taken from the queue, not yet sent
        self._wake = threading.Event()
        self._closing = False
        self._deadline = None
        self._reopen = False
        self._sock = None
        self._sockaddr = None
        self._next_attempt = 0.0
        self._backoff = options.reconnect_min
        self._connected_once = False
        # counters (read by stats() from another thread: plain ints, no lock needed)
        self.sent = 0
        self.dropped_full = 0      # reader thread: the queue was full (or closed)
        self.dropped = 0           # sender thread: spool cap, unsent at close, too big
        self._spool_depth = 0
        self.spooled = 0           # moved to the spool (delivered later or dropped there)
        self.reconnects = 0
        self.truncated = 0
        self.connect_failures = 0
        self.last_error = None
        self._spool_dropped_seen = 0
        self._stop_wait = threading.Event()   # close() and reopen(): end a backoff sleep
        if self.spool is not None:
            self._spool_dropped_seen = self.spool.dropped   # unreadable records found
            self.dropped += self._spool_dropped_seen
            self._spool_depth = len(self.spool)
        self._thread = threading.Thread(target=self._run, name="syslog %s" % target, daemon=True)
        self._thread.start()

    # -- the reader's side (any thread) -------------------------------------------------

    def send(self, message, event=None):
        queue = self._queue
        if len(queue) >= self._queue_max or self._closing:
            if not self._block or not self._wait_for_room():
                self.dropped_full += 1
                return
        queue.append((message, event, None))
        if not self._wake.is_set():
            self._wake.set()

    def _wait_for_room(self):
        """Blocking mode (replay): wait until the sender made room. False when closing or
        the sender is gone."""
        while len(self._queue) >= self._queue_max:
            if self._closing or self._thread is None or not self._thread.is_alive():
                return False
            self._room.clear()
            self._wake.set()
            self._room.wait(0.5)
        return not self._closing

    def send_stats(self, message, stats):
        """A heartbeat: MSGID ``stats``, the counters also in the SD element."""
        sd = "".join(' %s="%s"' % (key, sd_value(str(value))[0])
                     for key, value in sorted(stats.items()))
        if len(self._queue) >= self._queue_max or self._closing:
            return
        self._queue.append((message, None, sd))
        self._wake.set()

    def flush(self):
        """Non-blocking: the sender thread writes continuously; this only wakes it."""
        self._wake.set()

    def reopen(self):
        """SIGHUP: reconnect (e.g. to pick up a new address of the collector's name)."""
        self._reopen = True
        self._wake.set()
        self._stop_wait.set()

    def close(self, timeout=None):
        """Deliver what is queued within ``timeout`` seconds (the options' flush timeout
        by default); then what is left goes to the spool, or is counted as dropped."""
        if self._thread is None:
            return
        self.begin_close(timeout)
        self._thread.join(max(0.0, self._deadline - time.monotonic()) + 30)
        if not self._thread.is_alive():
            # whatever was queued after the sender stopped (it failed) is lost too
            self.dropped += len(self._queue) + len(self._framed)
            self._queue.clear()
            self._framed.clear()
        self._thread = None
        if self.spool is not None:
            self.spool.close()

    def begin_close(self, timeout=None):
        """Start the flush deadline without waiting (Outputs closes its transports in
        parallel: one deadline for all)."""
        if self._closing:
            return
        timeout = self.options.flush_timeout if timeout is None else timeout
        self._deadline = time.monotonic() + timeout
        self._closing = True
        self._next_attempt = 0.0              # one more attempt right away
        self._wake.set()
        self._stop_wait.set()

    def stats(self):
        return {
            "sent": self.sent,
            "dropped": self.dropped + self.dropped_full,
            "queued": len(self._queue) + len(self._framed),
            "spooled": self.spooled,
            "spool_depth": self._spool_depth,
            "reconnects": self.reconnects,
            "truncated": self.truncated,
            "connect_failures": self.connect_failures,
            "connected": self._sock is not None,
            "last_error": self.last_error,
        }

    # -- the sender thread ----------------------------------------------------------------

    def _run(self):
        try:
            self._loop()
        except Exception as exc:                            # never die silently
            self.last_error = "sender failed: %r" % (exc,)
        finally:
            self._finish()

    def _expired(self):
        return self._closing and time.monotonic() >= self._deadline

    def _pending(self):
        return bool(self._queue or self._framed or (self.spool is not None and len(self.spool)))

    def _loop(self):
        while True:
            if self._reopen:
                self._reopen = False
                if not self._closing:
                    self._stop_wait.clear()
                self._disconnect(graceful=True)
                self._next_attempt = 0.0
            if not self._pending():
                if self._closing:
                    return
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            if self._expired():
                return
            if self._sock is None and time.monotonic() >= self._next_attempt:
                self._connect()
            if self._sock is None:
                if self.spool is not None:
                    self._to_spool()
                    if self._closing:
                        return                  # everything is on disk: nothing to wait for
                self._wait_retry()
                continue
            try:
                self._deliver()
            except _Deadline:
                return
            except (OSError, ssl.SSLError) as exc:
                self._failed(exc)

    def _wait_retry(self):
        """Sleep until the next connection attempt (woken early by close/reopen)."""
        delay = self._next_attempt - time.monotonic()
        if self._closing:
            delay = min(delay, self._deadline - time.monotonic())
        if delay > 0:
            # not woken by each new message: they are moved to the spool in batches
            self._stop_wait.wait(min(delay, 0.25))

    def _deliver(self):
        """One round: spool first (oldest), then what failed before, then the queue."""
        spool = self.spool
        stream = self.kind in ("tcp", "tls")
        if spool is not None and (len(spool) or len(self._queue) > self._queue_max // 2):
            if len(self._queue) > self._queue_max // 2:
                # the collector is slower than the events (or the spool is being sent):
                # spill to disk rather than let the queue overflow; order is kept
                self._to_spool()
            records = spool.peek(1 << 16)
            if stream:
                self._write_stream(records)
                spool.consume(len(records))
                self.sent += len(records)
            else:
                for record in records:
                    if self._send_datagram(record):
                        self.sent += 1
                    spool.consume(1)
            self._spool_depth = len(spool)
            return
        framed = self._framed
        if not framed:
            self._frame_some(256)
        if stream:
            if framed:
                self._write_stream(list(framed))
                self.sent += len(framed)
                framed.clear()
        else:
            while framed:
                if self._send_datagram(framed[0]):
                    self.sent += 1
                framed.popleft()

    def _frame_some(self, count):
        queue, framed, frame = self._queue, self._framed, self.framer.frame
        formatter, limit = self.formatter, self._limit
        for _ in range(count):
            if not queue:
                break
            message, event, stats_sd = queue.popleft()
            data, cut = frame(message, event, formatter, limit, stats_sd)
            if cut:
                self.truncated += 1
            framed.append(data)
        if self._block:
            self._room.set()

    def _to_spool(self):
        """Everything in memory -> the spool, in order."""
        while self._queue:
            self._frame_some(4096)
            self._spool_append(list(self._framed))
            self._framed.clear()
        if self._framed:
            self._spool_append(list(self._framed))
            self._framed.clear()

    def _spool_append(self, records):
        try:
            self.spool.append(records)
            self.spooled += len(records)
        except OSError as exc:               # disk full, spool removed: count the loss
            self.last_error = "spool: %s" % exc
            self.dropped += len(records)
        new_drops = self.spool.dropped - self._spool_dropped_seen
        self._spool_dropped_seen = self.spool.dropped
        self.dropped += new_drops
        self._spool_depth = len(self.spool)

    # -- sockets --------------------------------------------------------------------------

    def _connect(self):
        try:
            sock = self._open_socket()
        except (OSError, ssl.SSLError, ssl.CertificateError) as exc:
            self.connect_failures += 1
            self.last_error = "connect: %s" % exc
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.options.reconnect_max)
            return
        self._sock = sock
        self._backoff = self.options.reconnect_min
        if self._connected_once:
            self.reconnects += 1
        self._connected_once = True

    def _open_socket(self):
        timeout = self.options.connect_timeout
        if self.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.connect(self.address)
            except OSError:
                sock.close()
                raise
            sock.settimeout(1.0)
            return sock
        host, port = self.address
        if self.kind == "udp":
            family, kind, proto, _name, sockaddr = socket.getaddrinfo(
                host, port, 0, socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, kind, proto)
            self._sockaddr = sockaddr
            sock.settimeout(1.0)
            return sock
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self.kind == "tls":
                sock = self._context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(1.0)
        return sock

    def _disconnect(self, graceful=False):
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        if graceful and isinstance(sock, ssl.SSLSocket):
            try:                               # close_notify: a clean end for the collector
                sock.settimeout(0.5)
                sock.unwrap()
            except (OSError, ValueError):
                pass
        try:
            sock.close()
        except OSError:
            pass

    def _failed(self, exc):
        self.last_error = "send: %s" % exc
        self._disconnect()
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.options.reconnect_max)

    def _peer_closed(self):
        """A syslog collector never writes to us: a readable stream socket means it
        closed (or reset) the connection. TLS may deliver session tickets: read them."""
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            pass
        elif not select.select([sock], [], [], 0)[0]:
            return False
        sock.settimeout(0)
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    return True
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False
        except (OSError, ssl.SSLError):
            return True
        finally:
            sock.settimeout(1.0)

    def _write_stream(self, records):
        """Write framed messages, octet-counted; raise OSError when the connection is gone
        (the caller keeps the records to send again), _Deadline when close's deadline
        passed in the middle."""
        if self._peer_closed():
            raise ConnectionResetError(errno.ECONNRESET, "collector closed the connection")
        data = b"".join([b"%d %s" % (len(record), record) for record in records])
        view = memoryview(data)
        done = 0
        while done < len(data):
            try:
                done += self._sock.send(view[done:done + 262144])
            except socket.timeout:
                if self._expired():
                    raise _Deadline()

    def _send_datagram(self, record):
        while True:
            try:
                if self.kind == "udp":
                    self._sock.sendto(record, self._sockaddr)
                else:
                    self._sock.send(record)
                return True
            except socket.timeout:
                if self._expired():
                    raise _Deadline()
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    self.dropped += 1
                    self.last_error = "message too long for the socket (%d bytes)" % len(record)
                    return False
                if self.kind == "udp" and exc.errno in (errno.ECONNREFUSED, errno.ENOBUFS):
                    return True                # UDP is fire and forget
                raise

    def _finish(self):
        """The sender stops: what was not delivered goes to the spool or is dropped."""
        if self.spool is not None:
            try:
                self._to_spool()
            except OSError:
                pass
        lost = len(self._queue) + len(self._framed)
        self._queue.clear()
        self._framed.clear()
        self.dropped += lost
        self._disconnect(graceful=True)


def _spool_name(kind, address):
    if kind == "unix":
        text = "unix" + address
    else:
        text = "%s_%s_%d" % (kind, address[0], address[1])
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)
