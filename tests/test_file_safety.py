"""Files mlockaudit writes as root are private and safe from planted links (issue #17):
``file:`` outputs (replay on the command line, the Python API, start's SIGHUP reopen), the
spool and the run directory. New files are 0600 whatever the umask (0 here, to prove the
mode is explicit), ``--file-mode`` is honoured, and a symlink, a non-regular file, a file
with a second hard link or another uid's file is refused with its target untouched."""

import os
import stat
import subprocess
import sys

import pytest

from conftest import FIXTURES
from mlockaudit import cli, safefiles
from mlockaudit.outputs import OutputError, Outputs
from mlockaudit.replay import replay as run_replay
from mlockaudit.state import InstanceLock, StateFile
from mlockaudit.transports.options import OutputOptions
from mlockaudit.transports.spool import Spool, SpoolError
from mlockaudit.transports.stream import OutputOpenError, StreamTransport

MLOCKAUDIT = [sys.executable, "-m", "mlockaudit"]
CAPTURE = os.path.join(FIXTURES, "captures", "auditd-enriched.log")
NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


@pytest.fixture
def umask0():
    """umask 0 for the test (and its children): a mode that comes out private was set."""
    old = os.umask(0)
    yield
    os.umask(old)


def replay_cli(*args):
    result = subprocess.run(MLOCKAUDIT + ["replay", CAPTURE] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return result.returncode, result.stderr.decode("utf-8", "replace")


def mode_of(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


def victim(tmp_path, name="victim"):
    """A file a planted link points at: its content and mtime must survive."""
    path = tmp_path / name
    path.write_bytes(b"do not touch\n")
    os.utime(str(path), (1000000000, 1000000000))
    return path


def untouched(path):
    st = os.stat(str(path))
    return path.read_bytes() == b"do not touch\n" and st.st_mtime == 1000000000


@pytest.fixture(scope="module")
def events():
    collected = []
    run_replay(CAPTURE, collected.append)
    assert len(collected) > 10
    return collected


# -- new files: the mode ----------------------------------------------------------------

def test_replay_creates_its_file_0600_under_umask_0(tmp_path, umask0):
    out = tmp_path / "events.jsonl"
    code, err = replay_cli("-o", "file:%s" % out)
    assert code == 0, err
    assert mode_of(out) == 0o600 and out.read_bytes().count(b"\n") > 10


@pytest.mark.parametrize("umask", [0, 0o077])
def test_file_mode_is_exact_whatever_the_umask(tmp_path, umask):
    """0640 under UMask=0077 (the unit's) is still 0640: fchmod after the create."""
    out = tmp_path / "events.jsonl"
    old = os.umask(umask)
    try:
        code, err = replay_cli("-o", "file:%s" % out, "--file-mode", "0640")
    finally:
        os.umask(old)
    assert code == 0, err
    assert mode_of(out) == 0o640


def test_api_creates_0600_and_honours_file_mode(tmp_path, umask0, events):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    out = Outputs(["file:%s" % first])
    out.emit(events[0])
    out.close()
    out = Outputs(["file:%s" % second], options=OutputOptions(file_mode="0640"))
    out.close()
    assert mode_of(first) == 0o600 and first.read_bytes().endswith(b"\n")
    assert mode_of(second) == 0o640


def test_an_existing_file_is_tightened_never_widened(tmp_path, umask0):
    loose, tight = tmp_path / "loose.jsonl", tmp_path / "tight.jsonl"
    loose.write_bytes(b"old line\n")
    os.chmod(str(loose), 0o644)
    tight.write_bytes(b"")
    os.chmod(str(tight), 0o600)
    assert replay_cli("-o", "file:%s" % loose)[0] == 0
    assert replay_cli("-o", "file:%s" % tight, "--file-mode", "0640")[0] == 0
    assert mode_of(loose) == 0o600 and loose.read_bytes().startswith(b"old line\n")
    assert mode_of(tight) == 0o600


@pytest.mark.parametrize("value", ["0660", "0666", "0755", "4600", "0400", "640x", "", "06400"])
def test_file_modes_that_are_not_allowed(tmp_path, value):
    code, err = replay_cli("-o", "file:%s" % (tmp_path / "x"), "--file-mode", value)
    assert code == 2 and "--file-mode" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
    with pytest.raises(OutputError):
        OutputOptions(file_mode=value)


def test_file_mode_in_the_config_file(tmp_path):
    from mlockaudit import config
    start = cli.main.commands["start"]
    path = tmp_path / "c.toml"
    path.write_text('file_mode = "0640"\n')
    ctx = start.make_context("start", [])
    assert config.apply(ctx, dict(ctx.params), str(path))["file_mode"] == "0640"
    assert ctx.params["file_mode"] == "0600"                     # the default
    for text, words in (('file_mode = 640\n', "octal string"),
                        ('file_mode = "0666"\n', "not allowed")):
        path.write_text(text)
        ctx = start.make_context("start", [])
        with pytest.raises(config.ConfigError) as info:
            config.apply(ctx, dict(ctx.params), str(path))
        assert "'file_mode'" in str(info.value) and words in str(info.value)


# -- what is refused ----------------------------------------------------------------------

def test_a_planted_symlink_is_refused_and_its_target_untouched(tmp_path):
    target = victim(tmp_path)
    link = tmp_path / "events.jsonl"
    os.symlink(str(target), str(link))
    code, err = replay_cli("-o", "file:%s" % link)
    assert code == 2 and "Traceback" not in err
    assert "refusing file:%s: it is a symbolic link" % link in err
    assert untouched(target) and os.path.islink(str(link))
    with pytest.raises(OutputError) as info:
        Outputs(["file:%s" % link])
    assert "symbolic link" in str(info.value)
    assert untouched(target)


def test_a_dangling_symlink_creates_nothing(tmp_path):
    link, where = tmp_path / "events.jsonl", tmp_path / "created-by-root"
    os.symlink(str(where), str(link))
    code, err = replay_cli("-o", "file:%s" % link)
    assert code == 2 and "symbolic link" in err
    assert not os.path.lexists(str(where))


@needs_root
def test_a_file_of_another_uid_is_refused(tmp_path):
    target = victim(tmp_path, "events.jsonl")
    os.chown(str(target), NOBODY, NOBODY)
    code, err = replay_cli("-o", "file:%s" % target)
    assert code == 2
    assert "refusing file:%s: it is owned by uid %d, not by uid 0" % (target, NOBODY) in err
    assert untouched(target)
    with pytest.raises(OutputError):
        Outputs(["file:%s" % target])
    with pytest.raises(safefiles.UnsafePath):
        StreamTransport(str(target))
    assert untouched(target)


def test_a_second_hard_link_is_refused(tmp_path):
    target = victim(tmp_path)
    os.link(str(target), str(tmp_path / "events.jsonl"))
    code, err = replay_cli("-o", "file:%s" % (tmp_path / "events.jsonl"))
    assert code == 2 and "it has 2 hard links" in err
    assert untouched(target)


def test_a_fifo_and_a_directory_are_refused_without_hanging(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(str(fifo))
    code, err = replay_cli("-o", "file:%s" % fifo)            # (no reader: must not block)
    assert code == 2 and "refusing file:%s: it is a fifo, not a regular file" % fifo in err
    code, err = replay_cli("-o", "file:%s" % tmp_path)
    assert code == 2 and "it is a directory, not a regular file" in err


def test_a_fifo_with_a_reader_is_refused_too(tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(safefiles.UnsafePath) as info:
            StreamTransport(fifo)
        assert "a fifo" in str(info.value)
    finally:
        os.close(reader)


def test_a_character_device_stays_allowed(tmp_path):
    """file:/dev/null (and /dev/full in the hostile tests) are devices only root makes."""
    code, err = replay_cli("-o", "file:/dev/null")
    assert code == 0, err
    assert stat.S_IMODE(os.stat("/dev/null").st_mode) == 0o666


# -- SIGHUP reopen ------------------------------------------------------------------------

def test_reopen_onto_a_planted_link_is_counted_then_recovers(tmp_path, events):
    path = tmp_path / "events.jsonl"
    target = victim(tmp_path)
    out = Outputs(["file:%s" % path])
    out.emit(events[0])
    out.flush()
    os.rename(str(path), str(path) + ".1")                    # logrotate moves it away...
    os.symlink(str(target), str(path))                         # ...and someone plants a link
    problems = out.reopen()
    assert len(problems) == 1
    assert problems[0].startswith("refusing file:%s: it is a symbolic link" % path)
    assert "counted as lost until a reopen (SIGHUP) succeeds" in problems[0]
    for event in events[1:4]:
        out.emit(event)
    out.flush()
    stats = out.stats()
    assert stats["lost"] == 3 and stats["transports"]["file:%s" % path]["dropped"] == 3
    assert "file:%s: sent=1 lost=3 (refusing" % path in out.summary()
    assert untouched(target)
    os.unlink(str(path))                                       # the link is gone: recovers
    assert out.reopen() == []
    out.emit(events[4])
    out.close()
    assert out.stats()["lost"] == 3 and out.stats()["sent"] == 2
    assert mode_of(path) == 0o600 and path.read_bytes().count(b"\n") == 1
    assert (tmp_path / "events.jsonl.1").read_bytes().count(b"\n") == 1
    assert untouched(target)


def test_stream_reopen_raises_and_counts(tmp_path):
    path = str(tmp_path / "events.jsonl")
    transport = StreamTransport(path)
    os.unlink(path)
    os.mkdir(path)
    with pytest.raises(OutputOpenError):
        transport.reopen()
    transport.send("lost")
    assert transport.stats()["dropped"] == 1 and "a directory" in transport.stats()["last_error"]
    os.rmdir(path)
    transport.reopen()
    transport.send("kept")
    transport.close()
    assert open(path, "rb").read() == b"kept\n" and transport.stats()["sent"] == 1


class _Source(object):
    """Stands in for the kernel backend (start's kernel side is the live tests'): the
    daemon only hands it the new emit function on SIGHUP."""

    def __init__(self):
        self.emit = None

    def set_emit(self, emit):
        self.emit = emit


@pytest.mark.parametrize("with_reload", [True, False])
def test_start_sighup_onto_a_planted_link_keeps_running(tmp_path, events, capsys,
                                                         monkeypatch, with_reload):
    """start's SIGHUP path (daemon._tick): the config is reread and the outputs opened
    again (or, without a config reload, reopened); a refused file is said on stderr and
    counted in delivery_lost, and the next SIGHUP after the path is fixed delivers again."""
    from mlockaudit.daemon import Daemon
    monkeypatch.setenv("MLOCKAUDIT_CONFIG", str(tmp_path / "none.toml"))
    path = tmp_path / "events.jsonl"
    target = victim(tmp_path)
    start = cli.main.commands["start"]
    ctx = start.make_context("start", ["-o", "file:%s" % path, "--backend", "tracefs"])
    options = cli._start_options(ctx, dict(ctx.params))
    daemon = Daemon(options, cli._start_outputs,
                    reload=(lambda: cli._start_options(ctx, dict(ctx.params))) if with_reload
                    else None)
    daemon.source = _Source()
    daemon.outputs.emit(events[0])
    os.rename(str(path), str(path) + ".1")
    os.symlink(str(target), str(path))
    daemon._hup = True
    daemon._tick()
    err = capsys.readouterr().err
    assert "mlockaudit: reopen: refusing file:%s: it is a symbolic link" % path in err
    emit = daemon.source.emit if with_reload else daemon.outputs.emit
    for event in events[1:3]:
        emit(event)
    lost = daemon.outputs.stats()["lost"] + getattr(daemon, "_retired_lost", 0)
    assert lost == 2 and untouched(target)
    os.unlink(str(path))
    daemon._hup = True
    daemon._tick()
    assert "refusing" not in capsys.readouterr().err
    emit = daemon.source.emit if with_reload else daemon.outputs.emit
    emit(events[3])
    daemon.outputs.close()
    assert path.read_bytes().count(b"\n") == 1 and mode_of(path) == 0o600
    assert daemon.outputs.stats()["lost"] + getattr(daemon, "_retired_lost", 0) == 2


# -- the spool ------------------------------------------------------------------------------

def test_spool_directory_and_files_are_private(tmp_path, umask0):
    directory = tmp_path / "spool" / "syslog+tcp_host_514"
    spool = Spool(str(directory), 1 << 20, segment_bytes=256)
    spool.append([b"secret command line %d" % i for i in range(40)])
    spool.consume(len(spool.peek(100)))
    spool.close()                                    # (rewrites the partly sent head)
    assert mode_of(directory) == 0o700 and mode_of(directory.parent) == 0o700
    names = os.listdir(str(directory))
    assert ".lock" in names and any(name.endswith(".spool") for name in names)
    assert all(mode_of(directory / name) == 0o600 for name in names)


def test_an_existing_spool_directory_is_tightened(tmp_path):
    directory = tmp_path / "spool"
    directory.mkdir()
    os.chmod(str(directory), 0o755)
    Spool(str(directory), 1 << 20).close()
    assert mode_of(directory) == 0o700


def test_spool_refuses_a_linked_directory_and_a_planted_lock(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(str(elsewhere), str(tmp_path / "spool"))
    with pytest.raises(SpoolError) as info:
        Spool(str(tmp_path / "spool"), 1 << 20)
    assert "symbolic link" in str(info.value) and os.listdir(str(elsewhere)) == []
    spool_dir = tmp_path / "spool2"
    spool_dir.mkdir()
    target = victim(tmp_path)
    os.symlink(str(target), str(spool_dir / ".lock"))
    with pytest.raises(SpoolError) as info:
        Spool(str(spool_dir), 1 << 20)
    assert "symbolic link" in str(info.value) and untouched(target)


def test_spool_refuses_a_planted_segment_link(tmp_path):
    spool_dir = tmp_path / "spool"
    Spool(str(spool_dir), 1 << 20).close()
    target = victim(tmp_path)
    os.symlink(str(target), str(spool_dir / ("%016d.spool" % 1)))
    with pytest.raises(SpoolError) as info:
        Spool(str(spool_dir), 1 << 20)
    assert "refusing %s: it is a symbolic link" % (spool_dir / ("%016d.spool" % 1)) in str(
        info.value)
    assert untouched(target)


@needs_root
def test_spool_refuses_a_foreign_directory(tmp_path):
    directory = tmp_path / "spool"
    directory.mkdir()
    os.chown(str(directory), NOBODY, NOBODY)
    with pytest.raises(SpoolError) as info:
        Spool(str(directory), 1 << 20)
    assert "owned by uid %d" % NOBODY in str(info.value)
    assert os.listdir(str(directory)) == []


# -- the run directory (lock and state file) --------------------------------------------

def test_run_directory_and_files_are_private(tmp_path, umask0):
    run = tmp_path / "run"
    run.mkdir()
    os.chmod(str(run), 0o755)                     # as systemd's RuntimeDirectory= makes it
    lock = InstanceLock(str(run)).acquire()
    try:
        StateFile(str(run)).save({"pid": os.getpid()})
        assert StateFile(str(run)).load() == {"pid": os.getpid()}
    finally:
        lock.release()
    assert mode_of(run) == 0o700
    assert mode_of(run / "lock") == 0o600 and mode_of(run / "state.json") == 0o600


def test_run_directory_as_a_link_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(str(elsewhere), str(tmp_path / "run"))
    with pytest.raises(safefiles.UnsafePath) as info:
        InstanceLock(str(tmp_path / "run")).acquire()
    assert "symbolic link" in str(info.value) and os.listdir(str(elsewhere)) == []


def test_state_file_links_are_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    target = victim(tmp_path)
    os.symlink(str(target), str(run / "state.json.tmp"))      # save() would truncate it
    with pytest.raises(safefiles.UnsafePath):
        StateFile(str(run)).save({"pid": 1})
    assert untouched(target)
    os.unlink(str(run / "state.json.tmp"))
    os.symlink(str(target), str(run / "state.json"))
    with pytest.raises(safefiles.UnsafePath):
        StateFile(str(run)).load()                # never trusted, never silently ignored
    os.symlink(str(target), str(run / "lock"))
    with pytest.raises(safefiles.UnsafePath):
        InstanceLock(str(run)).acquire()
    assert untouched(target)


@needs_root
def test_foreign_run_directory_and_state_are_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    os.chown(str(run), NOBODY, NOBODY)
    with pytest.raises(safefiles.UnsafePath) as info:
        InstanceLock(str(run)).acquire()
    assert "owned by uid %d" % NOBODY in str(info.value)
    os.chown(str(run), 0, 0)
    (run / "state.json").write_text('{"pid": 1, "tracefs": {"instance": "x"}}')
    os.chown(str(run / "state.json"), NOBODY, NOBODY)
    with pytest.raises(safefiles.UnsafePath):
        StateFile(str(run)).load()



def test_start_refuses_a_planted_link_before_anything_runs(tmp_path, monkeypatch):
    """start opens its outputs when the Daemon is built, before the lock, the cleanup and
    the backend (run()): a refusal leaves nothing in the kernel (the live test checks it)."""
    import click
    from mlockaudit.daemon import Daemon
    monkeypatch.setenv("MLOCKAUDIT_CONFIG", str(tmp_path / "none.toml"))
    target = victim(tmp_path)
    link = tmp_path / "events.jsonl"
    os.symlink(str(target), str(link))
    start = cli.main.commands["start"]
    ctx = start.make_context("start", ["-o", "file:%s" % link])
    with pytest.raises(click.UsageError) as info:
        Daemon(cli._start_options(ctx, dict(ctx.params)), cli._start_outputs)
    assert "refusing file:%s: it is a symbolic link" % link in str(info.value)
    assert untouched(target)


def test_replay_refuses_a_planted_spool_link(tmp_path):
    """Through the CLI: the spool of a syslog target is refused before anything is sent."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spool = tmp_path / "spool"
    spool.mkdir()
    os.symlink(str(elsewhere), str(spool / "tcp_127.0.0.1_9"))
    code, err = replay_cli("-o", "syslog+tcp://127.0.0.1:9", "--spool", str(spool))
    assert code == 2 and "Traceback" not in err
    assert "refusing %s: it is a symbolic link" % (spool / "tcp_127.0.0.1_9") in err
    assert os.listdir(str(elsewhere)) == []
