"""Issue #11: scripts/fuzz runs every target (audit and trace parsers, each format, the
syslog framing, replay) for a fixed number of iterations, with atheris where it is
installed and the built-in mutation loop everywhere else. Longer runs are by hand
(``scripts/fuzz all --runs 200000``)."""

import os
import subprocess
import sys

import pytest

from conftest import SCRIPTS

FUZZ = os.path.join(SCRIPTS, "fuzz")
#: per target; CI keeps the eight targets within about a minute (atheris instruments the
#: package at each start, a few seconds of it)
RUNS = int(os.environ.get("MLOCKAUDIT_FUZZ_RUNS", "1000"))


def run_fuzz(*args):
    proc = subprocess.Popen([sys.executable, FUZZ] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    output = proc.communicate()[0].decode("utf-8", "replace")
    return proc.returncode, output


@pytest.mark.slow
def test_fuzz_every_target_for_a_fixed_number_of_runs(tmp_path):
    code, output = run_fuzz("all", "--runs", str(RUNS), "--artifacts", str(tmp_path))
    assert code == 0, output
    assert output.count(" ok: ") == 8, output
    assert os.listdir(str(tmp_path)) == []


def test_fuzz_fallback_engine_runs_without_atheris(tmp_path):
    code, output = run_fuzz("trace", "--runs", "200", "--engine", "mutate",
                            "--artifacts", str(tmp_path))
    assert code == 0 and "no crash" in output, output


def test_fuzz_reports_a_crashing_input(tmp_path):
    """The harness itself: a target that fails leaves its input and exits 1."""
    code = subprocess.call([sys.executable, "-c", (
        "import runpy, sys; sys.argv = ['fuzz', 'trace', '--runs', '5', '--engine', 'mutate', "
        "'--artifacts', %r]; import mlockaudit.tracefs.lines as lines; "
        "lines.parse_line = lambda *a: 1 / 0; runpy.run_path(%r, run_name='__main__')"
    ) % (str(tmp_path), FUZZ)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert code == 1 and [name for name in os.listdir(str(tmp_path)) if name.startswith("crash-")]
