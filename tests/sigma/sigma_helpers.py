"""What the Sigma tests share (offline and live): where the Sigma venv is, how to run its
tools offline, and which rule stands for which of mlockaudit's detections."""

import json
import os
import subprocess

import pytest

from conftest import ROOT

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = os.path.join(ROOT, "rules", "sigma")
VALIDATION = os.path.join(ROOT, "rules", "sigma-validation.yml")
TAXONOMY = os.path.join(HERE, "data", "sigmahq-taxonomy.json")

#: mlockaudit's detection id -> the id of the Sigma rule (rules/sigma) that is the same
#: detection over the ECS output.
SIGMA_IDS = {
    "mlockall-future": "d3e58eab-3052-4296-8b88-1344e04b27bd",
    "large-lock": "bf2bd2a1-e933-4db6-a926-740807f5c18f",
    "memlock-raise-then-lock": "6bf9129f-43e4-427a-ab28-a581b985cf7f",
    "lock-storm": "11041b99-8403-45a4-9ae4-45c824b6dfe6",
}
#: correlation base rules: no query of their own
BASE_RULES = {"e71b1e84-0776-43df-ac20-a28e21ca4a68", "85a753c6-8d60-41da-a666-6b366094dc99",
              "9f09e717-f4d5-437b-859b-33520b697dbf"}


def sigma_python():
    """The Python of the venv holding the pinned Sigma packages (scripts/test makes it
    and sets MLOCKAUDIT_SIGMA_PYTHON), or skip saying why."""
    python = os.environ.get("MLOCKAUDIT_SIGMA_PYTHON")
    if not python:
        pytest.skip("MLOCKAUDIT_SIGMA_PYTHON is not set: scripts/test makes a venv with the "
                    "pinned pySigma packages (Python >= 3.10) and points it there")
    if not os.path.exists(python):
        pytest.skip("MLOCKAUDIT_SIGMA_PYTHON=%s does not exist" % python)
    probe = subprocess.run([python, "-c", "import sigma.backends.sqlite, sigma.cli.main"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if probe.returncode:
        pytest.skip("pySigma (and its backends) are not installed in %s" % python)
    return python


def sigma_run(python, tmp_path, script, *args):
    """A tests/sigma script under the Sigma venv, offline: HOME is a fresh directory, so
    no cache of a previous run (or of a download) can stand in for the seeded data."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ, HOME=str(home))
    return subprocess.run([python, os.path.join(HERE, script)] + [str(a) for a in args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
                          timeout=900)


def sigma_check(python, tmp_path, rules=RULES):
    return sigma_run(python, tmp_path, "sigma_offline.py", tmp_path / "cache", "check",
                     "--fail-on-issues", "-c", VALIDATION, rules)


def sigma_matches(python, tmp_path, jsonl, rules=RULES):
    """{Sigma rule id: sorted process.pid values it matched (None: a base rule)} over the
    ECS JSON lines in ``jsonl``, with pySigma's sqlite backend."""
    result = sigma_run(python, tmp_path, "sigma_eval.py", "run", rules, jsonl, TAXONOMY)
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    return json.loads(result.stdout.decode("utf-8"))
