"""The configuration file: every start option, the command line wins, and mistakes are
errors that name the key (never silently ignored)."""

import subprocess
import sys

import pytest

from mlockaudit import config
from mlockaudit.cli import main

MLOCKAUDIT = [sys.executable, "-m", "mlockaudit"]


def apply_to_start(tmp_path, text, argv=()):
    path = tmp_path / "c.toml"
    path.write_text(text)
    start = main.commands["start"]
    ctx = start.make_context("start", list(argv))
    return config.apply(ctx, dict(ctx.params), str(path))


def test_keys_are_the_long_option_names(tmp_path):
    params = apply_to_start(tmp_path, 'backend = "tracefs"\nformat = "tracee"\n'
                                      'output = ["-", "file:/tmp/x"]\nevents = ["mlock2"]\n')
    assert params["backend"] == "tracefs" and params["format_name"] == "tracee"
    assert list(params["outputs"]) == ["-", "file:/tmp/x"] and params["events"] == "mlock2"


def test_command_line_wins(tmp_path):
    params = apply_to_start(tmp_path, 'backend = "tracefs"\n', ["--backend", "audit"])
    assert params["backend"] == "audit"


@pytest.mark.parametrize("text,words", [
    ("bogus = 1\n", ["unknown key 'bogus'", "backend"]),
    ('backend = "nope"\n', ["bad value for 'backend'", "nope"]),
    ('events = "mlock3"\n', ["bad value for 'events'", "mlock3"]),
    ('format = ["tracee", "cef"]\n', ["'format' takes one value"]),
    ("backend = \n", ["not valid TOML", "line 1"]),
])
def test_mistakes_name_the_key(tmp_path, text, words):
    with pytest.raises(config.ConfigError) as info:
        apply_to_start(tmp_path, text)
    for word in words:
        assert word in str(info.value)


def test_cli_reports_config_errors_without_traceback(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("bogus = 1\n")
    result = subprocess.run(MLOCKAUDIT + ["start", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert result.returncode == 2 and b"unknown key 'bogus'" in result.stderr
    assert b"Traceback" not in result.stderr


def test_shipped_plugin_config_is_valid(tmp_path):
    import os
    from conftest import ROOT
    text = open(os.path.join(ROOT, "rules", "auditd-plugin.toml")).read()
    params = apply_to_start(tmp_path, text)
    assert params["input_path"] == "-" and params["backend"] == "audit"


def test_shipped_example_config_is_valid(tmp_path):
    """rules/mlockaudit.toml as shipped, and with every commented-out setting switched on
    (the first of each key), is accepted."""
    import os
    from conftest import ROOT
    text = open(os.path.join(ROOT, "rules", "mlockaudit.toml")).read()
    params = apply_to_start(tmp_path, text)
    assert params["backend"] == "auto" and params["format_name"] == "tracee"
    settings, seen = [], set()
    for line in text.splitlines():
        candidate = line[2:] if line.startswith("# ") else line
        key = candidate.split(" = ", 1)[0]
        if " = " in candidate and not candidate.startswith("#") and key not in seen:
            seen.add(key)
            settings.append(candidate)
    params = apply_to_start(tmp_path, "\n".join(settings) + "\n")
    assert params["include_uid"] == ("0", "1000") and params["spool_dir"] == "/var/spool/mlockaudit"
    assert params["input_path"] == "/var/log/audit/audit.log" and params["buffer_kb"] == 16384
