"""Python 3.6 (RHEL 7/8's system python3) is the floor. The real interpreters run the suite
(scripts/test's 3.6 and 3.8 legs, tests/test_zipapp.py); this checks what a static checker
cannot see: attribute calls on values (``text.isascii()`` has no module to flag), and that
the 3.7+ names go through mlockaudit.compat only."""

import os
import re
import ssl
import sys
import threading
import time

import pytest

from conftest import ROOT
from mlockaudit import compat

SOURCES = [os.path.join(directory, name)
           for top in ("mlockaudit", "scripts", "tests")
           for directory, _dirs, files in os.walk(os.path.join(ROOT, top))
           for name in files
           if name.endswith(".py") or (top == "scripts" and "." not in name)]

# 3.7+ (or 3.8+) names that vermin misses on values, or that must go through compat.py
NEWER = re.compile(r"\.isascii\(|\btime_ns\(|clock_gettime_ns\(|monotonic_ns\(|"
                   r"get_native_id\(|TLSVersion|minimum_version|capture_output=|\btext=True|"
                   r"nullcontext|cached_property|\bshlex\.join|\bmath\.prod|"
                   r"from __future__ import annotations|dataclass")
ALLOWED = {os.path.join(ROOT, "mlockaudit", "compat.py"), os.path.abspath(__file__)}


def test_no_newer_python_outside_compat():
    offenders = []
    for path in SOURCES:
        if path in ALLOWED:
            continue
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            for match in NEWER.finditer(code):
                # compat's own functions are what callers use instead
                if re.search(r"\b(compat\.)?(time_ns|clock_gettime_ns|monotonic_ns)\(", code) \
                        and "time." not in code:
                    continue
                offenders.append("%s:%d: %s" % (os.path.relpath(path, ROOT), number,
                                                line.strip()))
    assert offenders == []


def test_compat_clocks_are_exact_integers():
    now = compat.time_ns()
    assert now.__class__ is int and abs(now - time.time() * 1e9) < 5e8
    first = compat.clock_gettime_ns(compat.CLOCK_BOOTTIME)
    second = compat.clock_gettime_ns(compat.CLOCK_BOOTTIME)
    assert first.__class__ is int and 0 < first <= second
    assert compat.monotonic_ns() - time.monotonic() * 1e9 < 5e8


def test_compat_isascii():
    assert compat.isascii("plain text\n") and compat.isascii("")
    assert not compat.isascii("caf\xe9") and not compat.isascii("\udcff")


def test_compat_gettid_is_the_kernel_thread_id():
    ids = []
    worker = threading.Thread(target=lambda: ids.append(compat.gettid()))
    worker.start()
    worker.join()
    assert compat.gettid() == os.getpid()          # the main thread's id is the pid
    assert ids[0].__class__ is int and 0 < ids[0] != os.getpid()


def test_compat_tls12_floor():
    context = ssl.create_default_context()
    how = compat.require_tls12(context)
    if how == "minimum_version":
        tls12 = getattr(ssl, "TLSVersion").TLSv1_2                  # (3.7+: this branch)
        assert context.minimum_version == tls12
    else:
        assert context.options & ssl.OP_NO_TLSv1 and context.options & ssl.OP_NO_TLSv1_1


@pytest.mark.skipif(sys.version_info >= (3, 7), reason="only meaningful on Python 3.6")
def test_running_on_3_6_uses_the_fallbacks():
    assert compat.PY36 and not hasattr(time, "time_ns")
    assert compat.time_ns.__module__ == "mlockaudit.compat"
