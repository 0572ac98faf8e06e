"""replay on inputs it did not write: real logs from other systems (laurel's corpus), bad
files, and the CLI contract (exit status, stderr summary, never a traceback)."""

import glob
import gzip
import json
import os
import subprocess
import sys

import pytest

from conftest import CAPTURES, CORPUS
from mlockaudit.replay import ReplayError, replay

CORPUS_FILES = sorted(glob.glob(os.path.join(CORPUS, "*.txt")))
MLOCKAUDIT = [sys.executable, "-m", "mlockaudit"]


@pytest.mark.parametrize("path", CORPUS_FILES, ids=os.path.basename)
def test_corpus_files_are_accounted_for(path, collect):
    events, emit = collect
    stats = replay(path, emit, source="audit")
    # no record of the laurel corpus is an mlock-family call
    assert events == [] and stats.events == 0
    assert stats.lines == stats.parsed + stats.skipped + stats.rejected_total
    with open(path, "rb") as handle:
        assert stats.lines == len(handle.read().splitlines())


def test_corpus_rejections_have_reasons(collect):
    events, emit = collect
    stats = replay(os.path.join(CORPUS, "README.txt"), emit, source="audit")
    assert stats.rejected == {"no type=": stats.rejected_total} and stats.rejected_total > 0


def run_cli(*args, stdin=None):
    return subprocess.run(MLOCKAUDIT + list(args), input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)


def test_cli_replay_outputs_one_json_object_per_event(tmp_path):
    out = tmp_path / "ev.jsonl"
    result = run_cli("replay", os.path.join(CAPTURES, "tracepoint.trace"), "-o", "file:%s" % out)
    assert result.returncode == 0, result.stderr
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == 198
    events = [json.loads(line) for line in lines[:-1]]         # each line parses alone
    assert {e["eventName"] for e in events} == {"mlock", "mlock2", "munlock", "mlockall",
                                               "munlockall"}
    assert b"198 events" in result.stderr and b"0 lines rejected" in result.stderr
    assert b"Traceback" not in result.stderr


def test_cli_replay_stdin_and_events_filter():
    with open(os.path.join(CAPTURES, "auditd-raw.log"), "rb") as handle:
        data = handle.read()
    result = run_cli("replay", "-", "--events", "mlockall,munlockall", stdin=data)
    assert result.returncode == 0, result.stderr
    names = [json.loads(line)["eventName"] for line in result.stdout.splitlines()]
    assert set(names) == {"mlockall", "munlockall"} and len(names) == 3 * 22


def test_cli_replay_gzip(tmp_path):
    path = tmp_path / "audit.log.1.gz"
    with open(os.path.join(CAPTURES, "auditd-raw.log"), "rb") as handle:
        path.write_bytes(gzip.compress(handle.read()))
    result = run_cli("replay", str(path))
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 198


@pytest.mark.parametrize("content,source", [
    (b"\x00\x01\x02garbage\xff" * 100, "auto"),
    (b"type=SYSCALL msg=audit(1.0:1): arch=c000003e syscall=325\nnot a record\n", "audit"),
    (b"           a-1 (1) [000] ..... 1.0: sys_mlock2(start: zz)\n", "trace"),
])
def test_bad_files_give_a_clear_error_and_a_count(tmp_path, content, source):
    path = tmp_path / "bad"
    path.write_bytes(content)
    result = run_cli("replay", str(path), "--source", source)
    assert b"Traceback" not in result.stderr
    if source == "auto":
        assert result.returncode == 2 and b"neither an audit log" in result.stderr
    else:
        assert result.returncode == 1 and b"rejected" in result.stderr


@pytest.mark.parametrize("target", ["missing-file", "."])
def test_unreadable_paths(target, tmp_path):
    result = run_cli("replay", str(tmp_path / target) if target != "." else str(tmp_path))
    assert result.returncode == 2 and b"cannot read" in result.stderr
    assert b"Traceback" not in result.stderr


def test_truncated_gzip_is_an_error_not_a_traceback(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(b"type=EOE msg=audit(1.0:1): \n" * 1000)[:60])
    result = run_cli("replay", str(path))
    assert result.returncode == 2 and b"Traceback" not in result.stderr


def test_replay_error_for_unknown_kind(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"hello\n")
    with pytest.raises(ReplayError):
        replay(str(path), lambda event: None)


def test_broken_pipe_is_quiet():
    with subprocess.Popen(MLOCKAUDIT + ["replay", os.path.join(CAPTURES, "auditd-raw.log")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read()
        proc.wait()
    assert b"Traceback" not in stderr and b"Exception ignored" not in stderr
