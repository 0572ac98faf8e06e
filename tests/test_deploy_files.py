"""The deployment files in rules/ are accepted by the tools that read them."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

RULES = os.path.join(ROOT, "rules")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies(tmp_path):
    unit = open(os.path.join(RULES, "mlockaudit.service")).read()
    # verify needs an executable at ExecStart: point it at this venv's console script
    script = os.path.join(os.path.dirname(sys.executable), "mlockaudit")
    unit = unit.replace("/usr/local/bin/mlockaudit", script)
    path = tmp_path / "mlockaudit.service"
    path.write_text(unit)
    result = subprocess.run(["systemd-analyze", "verify", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True)
    assert result.returncode == 0, result.stdout
    assert "Type=notify" in unit and "Restart=on-failure" in unit
    assert "CAP_AUDIT_CONTROL" in unit and "NoNewPrivileges=yes" in unit
    # events carry command lines: files and the run directory are private (issue #17)
    assert "\nUMask=0077\n" in unit and "\nRuntimeDirectoryMode=0700\n" in unit


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="no logrotate")
def test_logrotate_snippet_parses(tmp_path):
    result = subprocess.run(["logrotate", "--debug", "--state", str(tmp_path / "state"),
                             os.path.join(RULES, "mlockaudit.logrotate")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    assert result.returncode == 0 and "error" not in result.stdout.lower(), result.stdout
    # a rotated file is as private as the first one (issue #17)
    creates = [line.split() for line in open(os.path.join(RULES, "mlockaudit.logrotate"))
               if line.strip().startswith("create")]
    assert creates == [["create", "0600", "root", "root"]]


def test_plugin_conf_passes_at_most_two_args():
    """auditd hands a plugin at most 2 arguments (auditd-plugins(5))."""
    for line in open(os.path.join(RULES, "au-mlockaudit.conf")):
        if line.startswith("args"):
            assert len(line.split("=", 1)[1].split()) <= 2
