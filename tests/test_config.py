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


def test_coalesce_and_detections_keys(tmp_path):
    params = apply_to_start(tmp_path, 'coalesce = 1\ndetections = false\n')
    assert params["coalesce"] == 1.0 and params["no_detections"] is True
    params = apply_to_start(tmp_path, 'detections = "/etc/mlockaudit/mine.toml"\n')
    assert params["detections"] == "/etc/mlockaudit/mine.toml" and not params["no_detections"]
    params = apply_to_start(tmp_path, 'detections = true\n')
    assert params["detections"] is None and not params["no_detections"]
    with pytest.raises(config.ConfigError) as info:
        apply_to_start(tmp_path, 'coalesce = 0\n')
    assert "bad value for 'coalesce'" in str(info.value)


def test_a_bad_detections_file_is_a_usage_error(tmp_path):
    from conftest import CAPTURES
    rules = tmp_path / "mine.toml"
    rules.write_text(u'[[rule]]\nid = "x"\ntype = "often"\n')
    result = subprocess.run(MLOCKAUDIT + ["replay", "--detections", str(rules),
                                          CAPTURES + "/auditd-raw.log"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert result.returncode == 2 and b"rule 'x': type must be one of" in result.stderr
    assert b"Traceback" not in result.stderr


def test_replay_detects_and_coalesces_on_request(tmp_path):
    import json
    from conftest import CAPTURES
    capture = CAPTURES + "/auditd-raw.log"
    plain = subprocess.run(MLOCKAUDIT + ["replay", capture], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, check=True)
    calls = len(plain.stdout.splitlines())
    assert b"detection" not in plain.stdout                     # off unless asked for
    result = subprocess.run(MLOCKAUDIT + ["replay", "--detect", "--coalesce", "5", "-f", "ecs",
                                          capture], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, check=True)
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    alerts = [doc for doc in docs if doc["event"]["kind"] == "alert"]
    assert {doc["rule"]["id"] for doc in alerts} == {"mlockall-future"}
    assert sum(doc["mlockaudit"]["count"] for doc in docs if doc["event"]["kind"] == "event") \
        == calls
    assert b"detections=%d" % len(alerts) in result.stderr
