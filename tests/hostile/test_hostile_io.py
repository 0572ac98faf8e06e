"""Issue #11, the file and the command around the parsers.

Class 6: a corrupt ``.gz`` and a full output each exit 2 with the true cause (never a
traceback, never "cannot read" for a write). Class 9: the input kind is decided by a
majority of whole, anchored records, which a hostile comm cannot forge. The README's
exit codes: 0, 1 (lines rejected), 2 (cannot read, neither kind, cannot write).
"""

import gzip
import os
import subprocess
import sys

import pytest

from conftest import CAPTURES
from mlockaudit.replay import ReplayError, detect_source, replay

MLOCKAUDIT = [sys.executable, "-m", "mlockaudit"]
AUDIT_LOG = os.path.join(CAPTURES, "auditd-raw.log")
TRACE = os.path.join(CAPTURES, "tracepoint.trace")


def run_cli(*args, **kwargs):
    proc = subprocess.Popen(MLOCKAUDIT + list(args), stdin=kwargs.get("stdin_file"),
                            stdout=kwargs.get("stdout", subprocess.PIPE),
                            stderr=subprocess.PIPE)
    out, err = proc.communicate()
    return proc.returncode, out, err


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


# -- class 6 ------------------------------------------------------------------------------

def corrupt(data, at):
    damaged = bytearray(data)
    for index in range(at, min(len(damaged), at + 64)):
        damaged[index] ^= 0x5A
    return bytes(damaged)


@pytest.mark.parametrize("where", ["header", "middle", "end"])
def test_class6_corrupt_gzip_is_a_read_error_with_exit_2(tmp_path, where):
    packed = gzip.compress(read(AUDIT_LOG) * 20)
    at = {"header": 3, "middle": len(packed) // 2, "end": len(packed) - 20}[where]
    path = tmp_path / "audit.log.1.gz"
    path.write_bytes(corrupt(packed, at))
    code, _, err = run_cli("replay", str(path), "-o", "file:%s" % (tmp_path / "out"))
    assert code == 2 and b"Traceback" not in err, err
    assert b"cannot read" in err and str(path).encode() in err


def test_class6_corrupt_gzip_raises_replay_error_in_the_api(tmp_path):
    packed = gzip.compress(read(TRACE) * 10)
    path = tmp_path / "t.gz"
    path.write_bytes(corrupt(packed, len(packed) // 3))
    with pytest.raises(ReplayError) as info:
        replay(str(path), lambda event: None)
    assert "cannot read" in str(info.value)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("target", ["stdout", "file"])
def test_class6_full_output_is_a_write_error_with_exit_2(target):
    if target == "stdout":
        with open("/dev/full", "wb") as full:
            code, _, err = run_cli("replay", AUDIT_LOG, stdout=full)
    else:
        code, _, err = run_cli("replay", AUDIT_LOG, "-o", "file:/dev/full")
    assert code == 2 and b"Traceback" not in err, err
    assert b"cannot write the output" in err and b"No space left on device" in err
    assert b"cannot read" not in err


def test_class6_closed_pipe_stays_quiet():
    proc = subprocess.Popen(MLOCKAUDIT + ["replay", AUDIT_LOG], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait() == 0 and b"Traceback" not in err


# -- class 9 ------------------------------------------------------------------------------

def trace_line(comm, pid, text, ts="534.484168"):
    return b"%16s-%-7d (%7d) [001] ..... %12s: " % (comm, pid, pid, ts.encode()) + text


def test_class9_hostile_comm_cannot_steer_detection_to_audit(tmp_path):
    """A header-less trace_pipe capture whose first record comes from a process named
    ``type=\\nx``: its first line reads ``           type=``. It is still a trace."""
    with open(TRACE, "rb") as handle:
        body = handle.read().partition(b"\n")[2]
    hostile = [trace_line(b"type=\nx", 66, b"sys_mlock(start: 0x1000, len: 0x1000)"),
               trace_line(b"type=\nx", 66, b"sys_mlock -> 0x0")]
    data = b"\n".join(hostile) + b"\n" + body
    assert data.splitlines()[0].strip() == b"type="
    assert detect_source(data.splitlines(True)) == "trace"
    path = tmp_path / "pipe.trace"
    path.write_bytes(data)
    events = []
    stats = replay(str(path), events.append)
    assert stats.source == "trace" and stats.rejected == {} and stats.events == 199
    assert any(event.comm == "type=\nx" and event.tid == 66 for event in events)


@pytest.mark.parametrize("comm", [b"\n# tracer: nop", b"\nnode=x type=", b"type=SYSCALL ms",
                                  b"\nCPU:0 [LOST 1 E"])
def test_class9_comm_prefixes_do_not_vote(comm):
    with open(AUDIT_LOG, "rb") as handle:
        audit_lines = handle.read().splitlines(True)
    lines = trace_line(comm, 7, b"sys_mlock -> 0x0").split(b"\n")
    assert detect_source(lines + audit_lines[:5]) == "audit"
    assert detect_source(lines) in ("trace", None)


def test_class9_majority_over_the_first_lines():
    with open(AUDIT_LOG, "rb") as handle:
        audit_lines = handle.read().splitlines(True)
    with open(TRACE, "rb") as handle:
        trace_lines = handle.read().splitlines(True)
    assert detect_source(audit_lines[:3] + trace_lines[1:40]) == "trace"
    assert detect_source(trace_lines[1:3] + audit_lines[:40]) == "audit"
    assert detect_source([b"hello\n", b"# comment\n", b"\n"]) is None


# -- exit codes (README) --------------------------------------------------------------------

def test_exit_codes_as_documented(tmp_path):
    good = run_cli("replay", AUDIT_LOG, "-o", "file:%s" % (tmp_path / "a"))
    assert good[0] == 0 and b"0 lines rejected" in good[2]
    bad = tmp_path / "one-bad.log"
    bad.write_bytes(read(AUDIT_LOG).replace(b"a0=7f072befe000", b"a0=zz", 1))
    some = run_cli("replay", str(bad), "-o", "file:%s" % (tmp_path / "b"))
    assert some[0] == 1 and b"bad hex value: 1" in some[2] and b"198 events" not in some[2]
    assert b"197 events" in some[2]
    neither = tmp_path / "neither"
    neither.write_bytes(b"hello\n")
    assert run_cli("replay", str(neither))[0] == 2
    assert run_cli("replay", str(tmp_path / "missing"))[0] == 2
