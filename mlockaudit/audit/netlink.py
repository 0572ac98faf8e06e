"""NETLINK_AUDIT: the control channel (through pyroute2) and the record stream (a plain
socket).

Control requests (AUDIT_GET/SET, rule add/delete/list) go through pyroute2's
NetlinkSocket, which numbers requests, waits for the ACK and turns error ACKs into
exceptions. The record stream does not: unicast records carry an ``nlmsg_len`` without the
16-byte header (seen on 6.18: recv 298 bytes, nlmsg_len 282), and pyroute2's Marshal trusts
nlmsg_len, so it would cut every record short; it also builds a dict per message, which a
storm cannot afford. :class:`RecordSocket` takes each record's size from ``recv``.

The daemon registration (AUDIT_SET pid) must come from the socket that will read the
records (the kernel sends to the port that registered), so RecordSocket sends that one
request itself.
"""

import errno
import os
import socket
import struct

from .records import STAMP

NETLINK_AUDIT = 9
AUDIT_NLGRP_READLOG = 1

AUDIT_GET = 1000
AUDIT_SET = 1001
AUDIT_ADD_RULE = 1011
AUDIT_DEL_RULE = 1012
AUDIT_LIST_RULES = 1013

NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4

AUDIT_STATUS_ENABLED = 0x1
AUDIT_STATUS_FAILURE = 0x2
AUDIT_STATUS_PID = 0x4
AUDIT_STATUS_RATE_LIMIT = 0x8
AUDIT_STATUS_BACKLOG_LIMIT = 0x10

STATUS_FIELDS = ("mask", "enabled", "failure", "pid", "rate_limit", "backlog_limit", "lost",
                 "backlog")
STATUS_MASKS = {"enabled": AUDIT_STATUS_ENABLED, "failure": AUDIT_STATUS_FAILURE,
                "pid": AUDIT_STATUS_PID, "rate_limit": AUDIT_STATUS_RATE_LIMIT,
                "backlog_limit": AUDIT_STATUS_BACKLOG_LIMIT}
_STATUS = struct.Struct("=8I")
_NLMSGHDR = struct.Struct("=IHHII")


class AuditError(OSError):
    """The kernel refused an audit request (errno in ``errno``)."""


def _message_classes():
    """pyroute2 message classes for audit, built on first use (pyroute2 imports slowly)."""
    from pyroute2.netlink import nlmsg

    class audit_status(nlmsg):
        fields = tuple((name, "I") for name in STATUS_FIELDS)

    class audit_rule(nlmsg):
        """A raw ``struct audit_rule_data`` + buf, carried as bytes both ways.

        ``zstring = 0``: the bytes go out as they are (no NUL added, nlmsg_len = 16 +
        their length). pyroute2 0.9 assumes it; 0.7 and 0.8 (the versions that import on
        Python 3.6-3.8) read the attribute and fail without it."""
        fields = (("data", "s"),)
        zstring = 0

        def decode(self):
            nlmsg.decode(self)
            length = self["header"]["length"]
            self["data"] = bytes(self.data[self.offset + 16:self.offset + length])

    class audit_empty(nlmsg):
        fields = ()

    return audit_status, audit_rule, audit_empty


class PyrouteMissing(ImportError):
    """pyroute2 is absent or does not import on this Python (0.9 needs 3.9+)."""


def _netlink_socket_class():
    try:
        from pyroute2.netlink.nlsocket import NetlinkSocket
    except Exception as exc:      # not only ImportError: 0.9 raises TypeError on 3.8
        import sys
        raise PyrouteMissing("pyroute2 cannot be imported on Python %d.%d (%s: %s); "
                             "install pyroute2 0.7 or 0.8 there" % (
                                 sys.version_info[0], sys.version_info[1],
                                 exc.__class__.__name__, exc))
    return NetlinkSocket


class AuditControl(object):
    """AUDIT_GET/SET and rules over pyroute2. Use as a context manager."""

    def __init__(self):
        NetlinkSocket = _netlink_socket_class()
        self._status_cls, self._rule_cls, self._empty_cls = _message_classes()
        self._sock = NetlinkSocket(family=NETLINK_AUDIT)
        self._sock.bind()
        msg_map = self._sock.marshal.msg_map
        msg_map[AUDIT_GET] = self._status_cls
        msg_map[AUDIT_LIST_RULES] = self._rule_cls

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _request(self, msg, msg_type, flags):
        from pyroute2.netlink.exceptions import NetlinkError
        try:
            return list(self._sock.nlm_request(msg, msg_type=msg_type, msg_flags=flags))
        except NetlinkError as exc:
            raise AuditError(exc.code, "%s: %s" % (_REQUEST_NAMES.get(msg_type, msg_type),
                                                   os.strerror(exc.code)))

    def status(self):
        """AUDIT_GET -> dict of STATUS_FIELDS (enabled, pid, backlog_limit, lost, ...)."""
        replies = self._request(self._empty_cls(), AUDIT_GET, NLM_F_REQUEST)
        for reply in replies:
            if reply["header"]["type"] == AUDIT_GET:
                return {name: reply[name] for name in STATUS_FIELDS}
        raise AuditError(errno.EPROTO, "AUDIT_GET: no status in the reply")

    def set_status(self, **values):
        """AUDIT_SET of the given fields only (the mask says which), e.g. enabled=1."""
        msg = self._status_cls()
        msg["mask"] = 0
        for name in STATUS_FIELDS[1:]:
            msg[name] = 0
        for name, value in values.items():
            msg["mask"] |= STATUS_MASKS[name]
            msg[name] = value
        self._request(msg, AUDIT_SET, NLM_F_REQUEST | NLM_F_ACK)

    def list_rules(self):
        """AUDIT_LIST_RULES -> [rule bytes], every rule in the kernel (everyone's)."""
        from pyroute2.netlink import NLM_F_DUMP
        replies = self._request(self._empty_cls(), AUDIT_LIST_RULES,
                                NLM_F_REQUEST | NLM_F_DUMP)
        return [reply["data"] for reply in replies if reply["header"]["type"] == AUDIT_LIST_RULES]

    def add_rule(self, data):
        msg = self._rule_cls()
        msg["data"] = data
        self._request(msg, AUDIT_ADD_RULE, NLM_F_REQUEST | NLM_F_ACK)

    def delete_rule(self, data):
        msg = self._rule_cls()
        msg["data"] = data
        self._request(msg, AUDIT_DEL_RULE, NLM_F_REQUEST | NLM_F_ACK)


_REQUEST_NAMES = {AUDIT_GET: "AUDIT_GET", AUDIT_SET: "AUDIT_SET", AUDIT_ADD_RULE: "AUDIT_ADD_RULE",
                  AUDIT_DEL_RULE: "AUDIT_DEL_RULE", AUDIT_LIST_RULES: "AUDIT_LIST_RULES"}


class RecordSocket(object):
    """The socket records arrive on: unicast (as the registered audit daemon) or the
    AUDIT_NLGRP_READLOG multicast group (beside another daemon, kernel >= 3.16)."""

    #: Socket receive buffer. Multicast: large, since the kernel drops (ENOBUFS) what does
    #: not fit. Unicast: the kernel holds records back instead (backlog, hold queue), and a
    #: smaller buffer keeps the records the reader is about to parse in the CPU cache: a
    #: storm was delivered ~10% faster here with 4 MB than with 32 MB (scripts/bench-storm).
    RCVBUF = {True: 32 << 20, False: 4 << 20}

    def __init__(self, multicast=False, rcvbuf=None):
        self.multicast = multicast
        rcvbuf = rcvbuf or self.RCVBUF[bool(multicast)]
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        try:
            # As root, grow past rmem_max (SO_RCVBUF is capped by net.core.rmem_max).
            self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)    # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((0, AUDIT_NLGRP_READLOG if multicast else 0))
        self._seq = 0

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        self.sock.close()

    def _send_status(self, mask, pid):
        """AUDIT_SET from this socket; waits for its ACK, skipping records that arrive first.
        Returns the error number (0 on success)."""
        self._seq += 1
        payload = _STATUS.pack(mask, 0, 0, pid, 0, 0, 0, 0)
        self.sock.send(_NLMSGHDR.pack(16 + len(payload), AUDIT_SET, NLM_F_REQUEST | NLM_F_ACK,
                                      self._seq, 0) + payload)
        self.sock.settimeout(5)
        try:
            while True:
                data = self.sock.recv(65536)
                _, msg_type, _, seq, _ = _NLMSGHDR.unpack_from(data)
                if msg_type == NLMSG_ERROR and seq == self._seq:
                    return -struct.unpack_from("=i", data, 16)[0]
        finally:
            self.sock.settimeout(None)

    def register(self):
        """Become the audit daemon: records come to this socket, unicast."""
        error = self._send_status(AUDIT_STATUS_PID, os.getpid())
        if error:
            raise AuditError(error, "AUDIT_SET pid: %s" % os.strerror(error))

    def unregister(self):
        """Stop being the audit daemon (only the registered daemon may do this)."""
        return self._send_status(AUDIT_STATUS_PID, 0)


class BatchReceiver(object):
    """recvmmsg(2) through ctypes: up to ``count`` records per system call.

    A storm delivers three records per call (SYSCALL, PROCTITLE, EOE), each its own
    datagram; one recv() per datagram costs more than the parse of the record itself when
    the two cores are shared with the storm and kauditd. recvmmsg takes every waiting
    record in one call (MSG_WAITFORONE: returns as soon as at least one is there).
    Each record gets a slot of ``slot`` bytes, above the kernel's largest audit message
    (MAX_AUDIT_MESSAGE_LENGTH 8970 + the 16-byte header).
    """

    MSG_DONTWAIT = 0x40
    MSG_TRUNC = 0x20

    def __init__(self, fd, count=256, slot=9216):
        import ctypes

        class iovec(ctypes.Structure):
            _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]

        class msghdr(ctypes.Structure):
            _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                        ("msg_iov", ctypes.POINTER(iovec)), ("msg_iovlen", ctypes.c_size_t),
                        ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                        ("msg_flags", ctypes.c_int)]

        class mmsghdr(ctypes.Structure):
            _fields_ = [("msg_hdr", msghdr), ("msg_len", ctypes.c_uint)]

        libc = ctypes.CDLL(None, use_errno=True)
        self._recvmmsg = libc.recvmmsg
        self._recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                   ctypes.c_void_p]
        self._ctypes = ctypes
        self.fd = fd
        self.count = count
        self.slot = slot
        self._buffer = ctypes.create_string_buffer(count * slot)
        self._iovecs = (iovec * count)()
        self._messages = (mmsghdr * count)()
        base = ctypes.addressof(self._buffer)
        for index in range(count):
            self._iovecs[index].iov_base = base + index * slot
            self._iovecs[index].iov_len = slot
            self._messages[index].msg_hdr.msg_iov = ctypes.pointer(self._iovecs[index])
            self._messages[index].msg_hdr.msg_iovlen = 1
        self._address = ctypes.addressof(self._messages)
        self._data = memoryview(self._buffer).cast("B")
        self._headers = memoryview(self._messages).cast("B")
        self._stride = ctypes.sizeof(mmsghdr)
        self._len_offset = mmsghdr.msg_len.offset
        self._flags_offset = mmsghdr.msg_hdr.offset + msghdr.msg_flags.offset
        self._length_layouts = {}
        self.truncated = 0

    def receive(self):
        """Every record waiting now (possibly none), as a list of bytes. Raises OSError
        (ENOBUFS when a multicast reader fell behind)."""
        received = self._recvmmsg(self.fd, self._address, self.count, self.MSG_DONTWAIT, None)
        if received < 0:
            error = self._ctypes.get_errno()
            if error in (errno.EAGAIN, errno.EINTR):
                return []
            raise OSError(error, os.strerror(error))
        lengths = self._lengths(received).unpack_from(self._headers, self._len_offset)
        data, slot = self._data, self.slot
        out = [data[index * slot:index * slot + length].tobytes()
               for index, length in enumerate(lengths)]
        if slot in lengths:                    # (cannot happen below the kernel's maximum)
            out = self._drop_truncated(out, lengths)
        return out

    def _lengths(self, count):
        """A Struct that reads the msg_len of the first ``count`` messages in one call."""
        layout = self._length_layouts.get(count)
        if layout is None:
            gap = self._stride - 4
            layout = struct.Struct("=" + ("I%dx" % gap) * (count - 1) + "I")
            self._length_layouts[count] = layout
        return layout

    def _drop_truncated(self, out, lengths):
        kept = []
        for index, (record, length) in enumerate(zip(out, lengths)):
            flags, = struct.unpack_from("=i", self._headers, index * self._stride
                                        + self._flags_offset)
            if length == self.slot and flags & self.MSG_TRUNC:
                self.truncated += 1
            else:
                kept.append(record)
        return kept


def split_datagram(data):
    """A received record -> (type, stamp, body) without copying the payload twice.

    The payload is ``audit(SEC.MS:SERIAL): body``; sizes come from len(data), never from
    nlmsg_len (see the module docstring). Returns None for what is not a record."""
    msg_type = data[4] | (data[5] << 8)
    if msg_type < 1100:
        return None
    match = STAMP.match(data, 16)       # the kernel's audit(%llu.%03lu:%u) shape, checked
    if match is None:
        return None
    start = match.end()
    end = len(data)
    while end > start and data[end - 1] == 0:
        end -= 1
    return msg_type, match.group(1), data[start:end]


#: The record types of every call (SYSCALL 1300, PROCTITLE 1327, EOE 1320), as the
#: little-endian u16 at offset 4 of the netlink header: compared as two bytes.
_SYSCALL_TYPE, _PROCTITLE_TYPE, _EOE_TYPE = b"\x14\x05", b"\x2f\x05", b"\x28\x05"
_PAYLOAD = 16                          # sizeof(struct nlmsghdr)
_STAMP_START = _PAYLOAD + 6            # after "audit("


class DatagramFeeder(object):
    """Received datagrams -> the assembler's entry points (assembler.syscall, proctitle,
    feed). The three records of every call take a fast path (one regex per SYSCALL, a
    find per PROCTITLE, an EOE that completes nothing is skipped); anything else takes the
    generic, checked one. Counts what it rejects, by reason (a bounded set of labels).

    ``see``: the serial of every record goes there when given (multicast: gaps are the
    loss measure); the fast paths are then off, as they do not parse the serial."""

    def __init__(self, assembler, datagram_syscall, see=None):
        self.assembler = assembler
        self.match_syscall = datagram_syscall.match
        self.see = see
        self.rejected = 0
        self.rejected_reasons = {}

    def feed(self, batch):
        assembler = self.assembler
        syscall, proctitle, feed = assembler.syscall, assembler.proctitle, assembler.feed
        pending = assembler.pending
        match_syscall = self.match_syscall
        see = self.see
        for data in batch:
            kind = data[4:6]
            try:
                if see is None:
                    if kind == _SYSCALL_TYPE:
                        match = match_syscall(data, _PAYLOAD)
                        if match is not None:
                            groups = match.groups()
                            syscall(groups[0], groups[0], groups[1:], data[match.end():])
                            continue
                    elif kind == _PROCTITLE_TYPE:
                        close = data.find(b"): proctitle=", _STAMP_START)
                        if close > 0:
                            stamp = data[_STAMP_START:close]
                            proctitle(stamp, stamp, data[close + 13:])
                            continue
                    elif kind == _EOE_TYPE and not pending:
                        continue        # ends an event its PROCTITLE already completed
                record = split_datagram(data)
                if record is None:
                    continue
                rtype, stamp, body = record
                if see is not None:
                    see(int(stamp[stamp.find(b":") + 1:]))
                feed(rtype, stamp, body)
            except ValueError as exc:             # RecordError included: counted
                self.reject(getattr(exc, "reason", "bad value"))

    def reject(self, reason):
        self.rejected += 1
        reasons = self.rejected_reasons
        if reason in reasons or len(reasons) < 64:    # (fixed labels; bounded anyway)
            reasons[reason] = reasons.get(reason, 0) + 1
