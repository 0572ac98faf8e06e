"""What Python 3.6 lacks, in one place. RHEL 7's and RHEL 8's system Python is 3.6
(Ubuntu 18.04's and SLES 15's too), and the hosts mlockaudit exists for will not get a
newer one for a monitoring agent: everything the package uses from 3.7+ goes through here.

* ``time_ns()`` / ``clock_gettime_ns(clock)``: exact integer nanoseconds. 3.6 only has the
  float forms, and a double holds 53 bits: epoch nanoseconds (~2**61) would lose ~256 ns,
  enough to reorder two events. On 3.6 the libc ``clock_gettime`` is called through
  ctypes instead (the same call CPython makes).
* ``CLOCK_BOOTTIME``: the constant is 3.7+; its value is 7 on every Linux arch.
* ``isascii(text)``: ``str.isascii`` is 3.7+ (and a static checker does not see it).
* ``gettid()``: ``threading.get_native_id`` is 3.8+; before, the ``gettid`` syscall.
* ``require_tls12(context)``: ``SSLContext.minimum_version`` is 3.7+ and only works when
  Python was built against OpenSSL >= 1.1.0g; otherwise the OP_NO_* options do it.
"""

import ctypes
import ssl
import sys
import threading
import time

CLOCK_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", 7)
CLOCK_MONOTONIC = time.CLOCK_MONOTONIC
CLOCK_REALTIME = time.CLOCK_REALTIME

if hasattr(time, "time_ns"):
    time_ns = time.time_ns                            # novermin (guarded)
    clock_gettime_ns = time.clock_gettime_ns          # novermin (guarded)
    monotonic_ns = time.monotonic_ns                  # novermin (guarded)
else:                                                  # Python 3.6
    class _timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    _libc = ctypes.CDLL(None, use_errno=True)
    _clock_gettime = _libc.clock_gettime
    _clock_gettime.argtypes = [ctypes.c_int, ctypes.POINTER(_timespec)]
    _clock_gettime.restype = ctypes.c_int

    def clock_gettime_ns(clock_id):
        """The clock's time in integer nanoseconds (libc clock_gettime)."""
        spec = _timespec()
        if _clock_gettime(clock_id, ctypes.byref(spec)) != 0:
            error = ctypes.get_errno()
            raise OSError(error, "clock_gettime(%d) failed" % clock_id)
        return spec.tv_sec * 1000000000 + spec.tv_nsec

    def time_ns():
        return clock_gettime_ns(CLOCK_REALTIME)

    def monotonic_ns():
        return clock_gettime_ns(CLOCK_MONOTONIC)


if hasattr(str, "isascii"):
    def isascii(text):
        return text.isascii()
else:                                                  # Python 3.6
    def isascii(text):
        try:
            text.encode("ascii")
            return True
        except UnicodeEncodeError:
            return False


#: gettid(2) numbers for the arches mlockaudit supports (arch/*/syscall tables).
_GETTID = {"x86_64": 186, "i386": 224, "i686": 224, "aarch64": 178, "armv7l": 224,
           "armv6l": 224}

if hasattr(threading, "get_native_id"):
    gettid = threading.get_native_id                  # novermin (guarded)
else:                                                  # Python 3.6, 3.7
    def gettid():
        """The kernel's id of the calling thread (what trace lines call the pid)."""
        import os
        number = _GETTID.get(os.uname().machine)
        if number is None:
            raise OSError("gettid: unknown machine %s" % os.uname().machine)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        return libc.syscall(ctypes.c_long(number))


def require_tls12(context):
    """No TLS below 1.2 on ``context``, whatever the Python and OpenSSL build; returns
    how it was done ("minimum_version" or "options") so a test can see that it was."""
    version = getattr(ssl, "TLSVersion", None)
    if version is not None:
        try:
            context.minimum_version = version.TLSv1_2
            if context.minimum_version == version.TLSv1_2:
                return "minimum_version"
        except (AttributeError, ValueError):           # OpenSSL < 1.1.0g builds
            pass
    for name in ("OP_NO_SSLv2", "OP_NO_SSLv3", "OP_NO_TLSv1", "OP_NO_TLSv1_1"):
        context.options |= getattr(ssl, name, 0)
    return "options"


PY36 = sys.version_info < (3, 7)
