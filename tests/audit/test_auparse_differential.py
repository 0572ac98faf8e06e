"""Differential test: for every record of our captures and of the laurel corpus, our audit
parser and the reference parser (auparse, from Debian's python3-audit) agree on every
field mlockaudit uses.

python3-audit is not on PyPI; it is built for Debian's /usr/bin/python3 (3.11) and imports
from our venv once its dist-packages folder is on sys.path. scripts/test installs it and
sets MLOCKAUDIT_REQUIRE_AUPARSE=1, so in CI a missing module fails instead of skipping.
"""

import glob
import os
import sys

import pytest

from conftest import CAPTURES, CORPUS
from mlockaudit.audit.records import (RecordError, decode_proctitle, decode_string,
                                      parse_fields, parse_log_line, parse_stamp, parse_syscall)

if "/usr/lib/python3/dist-packages" not in sys.path:
    sys.path.append("/usr/lib/python3/dist-packages")
try:
    import auparse
except ImportError:                                    # pragma: no cover
    if os.environ.get("MLOCKAUDIT_REQUIRE_AUPARSE"):
        raise
    pytest.skip("python3-audit (auparse) is not installed", allow_module_level=True)

# the fields an Event is built from
USED = {"SYSCALL": ("arch", "syscall", "success", "exit", "a0", "a1", "a2", "a3", "ppid",
                    "pid", "auid", "uid", "gid", "euid", "suid", "fsuid", "egid", "sgid",
                    "fsgid", "tty", "ses", "comm", "exe", "key", "subj"),
        "PROCTITLE": ("proctitle",)}
DECODED = ("comm", "exe", "key")

FILES = sorted(glob.glob(os.path.join(CAPTURES, "*.log"))) + sorted(
    glob.glob(os.path.join(CORPUS, "*.txt")))


def auparse_records(path):
    """[(record text, type name, type number, (sec, milli, serial), host, {field: (raw, interp)})]"""
    parser = auparse.AuParser(auparse.AUSOURCE_FILE, path)
    parser.set_escape_mode(auparse.AUPARSE_ESC_RAW)
    out = []
    while parser.parse_next_event():
        parser.first_record()
        while True:
            stamp = parser.get_timestamp()
            if stamp is None:                          # not a record to auparse either
                if not parser.next_record():
                    break
                continue
            fields = {}
            if parser.first_field():
                while True:
                    try:
                        name = parser.get_field_name()
                    except RuntimeError:         # auparse cannot name it: skip the rest
                        break
                    try:
                        interpreted = parser.interpret_field()
                    except (UnicodeDecodeError, SystemError):
                        interpreted = None
                    fields.setdefault(name, (parser.get_field_str(), interpreted))
                    if not parser.next_field():
                        break
            try:
                type_name, type_number = parser.get_type_name(), parser.get_type()
            except LookupError:                       # a record auparse cannot type
                type_name = type_number = None
            out.append((parser.get_record_text(), type_name, type_number,
                        (stamp.sec, stamp.milli, stamp.serial), stamp.host, fields))
            if not parser.next_record():
                break
    return out


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_parsers_agree(path):
    compared = 0
    for text, type_name, type_number, (sec, milli, serial), host, fields in auparse_records(path):
        line = text.encode("utf-8", "surrogateescape")
        try:
            rtype, stamp, body, node = parse_log_line(line)
        except RecordError:
            pytest.fail("auparse read a record we reject: %r" % text[:200])
        if type_number is not None:                    # (auparse cannot type UNKNOWN[n])
            assert rtype == type_number or rtype == type_name.encode()
        assert parse_stamp(stamp) == (sec * 10**9 + milli * 10**6, serial)
        assert (node.decode() if node else None) == host
        if type_name not in USED:
            continue
        ours = parse_syscall(body) if type_name == "SYSCALL" else parse_fields(body)
        for name in USED[type_name]:
            if name not in fields:
                assert name.encode() not in ours, (name, text)
                continue
            raw, interpreted = fields[name]
            assert ours[name.encode()].decode("utf-8", "surrogateescape") == raw, (name, text)
            if name in DECODED and interpreted is not None and raw != "(null)":
                assert decode_string(ours[name.encode()]) == interpreted, (name, text)
            if name == "proctitle" and interpreted is not None:
                assert decode_proctitle(ours[b"proctitle"]) == interpreted.rstrip(" ")
            compared += 1
    if "captures" in path and "surface-" not in path:      # (the synthetic one is small)
        assert compared > 1000


def test_corpus_is_present():
    assert len(FILES) > 30, "laurel corpus not found at %s" % CORPUS
