"""rules/sigma under pySigma, offline: ``sigma check`` passes with every validator (the data
it would download seeded from tests/sigma/data), the rules convert with real backends,
and with the sqlite backend each rule matches its workload's ECS documents and not the
benign ones. The ECS documents are mlockaudit's own ECS formatter's output for Events
built for the workloads (tests/live/test_live_siem.py does the same over real output).

pySigma needs Python >= 3.10: the tools run in a separate venv (MLOCKAUDIT_SIGMA_PYTHON,
made by scripts/test); without it these tests are skipped, saying so."""

import json
import os

import pytest

from mlockaudit import syscalls
from mlockaudit.detect import Detector, load_rules
from mlockaudit.event import Event, Process
from mlockaudit.formats import FORMATS
from mlockaudit.formats import common
from sigma_helpers import (BASE_RULES, RULES, SIGMA_IDS, sigma_check, sigma_matches,
                           sigma_python, sigma_run)

T0 = 1795715167000000000
MS = 1000000
MIB = 1 << 20


@pytest.fixture(scope="module")
def python():
    return sigma_python()


@pytest.fixture
def surface(monkeypatch):
    """setrlimit (and mmap) as the locking-surface change will add them (Tracee's names;
    ACTIONS gets a word for ECS's event.action): until then only these tests know them."""
    monkeypatch.setitem(syscalls.ARG_SPECS, "setrlimit",
                        (("resource", "int"), ("rlim", "const struct rlimit64*")))
    monkeypatch.setitem(common.ACTIONS, "setrlimit", "changed-limit")


def test_sigma_check_passes(python, tmp_path):
    result = sigma_check(python, tmp_path)
    output = result.stdout.decode("utf-8", "replace") + result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, output
    assert "No validation issues found" in output and "Found 0 errors" in output


def test_the_check_knows_mlockaudits_fields(python, tmp_path):
    """The seeded taxonomy is used: a rule over a field mlockaudit never writes fails."""
    rules = tmp_path / "rules"
    rules.mkdir()
    with open(os.path.join(RULES, "lnx_mlockaudit_mlockall_future.yml")) as handle:
        text = handle.read().replace("mlockaudit.flagNames|contains", "mlockaudit.flagz|contains")
    (rules / "lnx_mlockaudit_mlockall_future.yml").write_text(text)
    result = sigma_check(python, tmp_path, str(rules))
    assert result.returncode != 0
    assert b"mlockaudit.flagz" in result.stdout + result.stderr


def _conversions(python, tmp_path, backend):
    result = sigma_run(python, tmp_path, "sigma_eval.py", "convert", backend, RULES)
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    return json.loads(result.stdout.decode("utf-8"))


def test_every_rule_converts_to_splunk(python, tmp_path):
    converted = _conversions(python, tmp_path, "splunk")
    for rule_id, result in converted.items():
        assert result["ok"], (rule_id, result)
    assert 'event.code="mlockall"' in converted[SIGMA_IDS["mlockall-future"]]["query"]
    assert "event_count > 1000" in converted[SIGMA_IDS["lock-storm"]]["query"]


def test_every_rule_converts_to_elasticsearch(python, tmp_path):
    lucene = _conversions(python, tmp_path, "lucene")
    for rule_id, result in lucene.items():
        if rule_id in (SIGMA_IDS["memlock-raise-then-lock"], SIGMA_IDS["lock-storm"]):
            assert not result["ok"]          # (Lucene queries have no correlations)
        else:
            assert result["ok"], (rule_id, result)
    assert "mlockaudit.args.len:>67108864" in lucene[SIGMA_IDS["large-lock"]]["query"]
    eql = _conversions(python, tmp_path, "eql")       # Elasticsearch's sequences: all
    assert all(result["ok"] for result in eql.values()), eql
    assert eql[SIGMA_IDS["memlock-raise-then-lock"]]["query"].startswith(
        "sample by host.name, process.pid")


def _process(pid, uid=1000, exe="/usr/local/bin/workload"):
    return Process(pid=pid, ppid=1, uid=uid, comm="workload", exe=exe, hostname="lab-1",
                   start_time=T0 - 1000 * MS)


def _event(process, name, args, at_ms, ret=0, serial=None):
    return Event(name, "audit", process, timestamp=T0 + at_ms * MS, arch="x86_64",
                 syscall_nr=syscalls.SYSCALL_NUMBERS["x86_64"].get(name), args=args, ret=ret,
                 extra={"serial": serial or pid_serial(process, at_ms)})


def pid_serial(process, at_ms):
    return process.pid * 100000 + int(at_ms * 10)


#: workload -> pid, for the offline runs
PIDS = {"raise-then-lock": 101, "mlockall-future": 102, "key-store-32k": 103, "large-lock": 104,
        "root-large-lock": 105, "mlockall-current": 106, "slow-loop": 107, "lock-then-raise": 108,
        "storm": 109}


def workloads():
    """The workloads' calls, as the backends would report them."""
    p = {name: _process(pid, uid=0 if name == "root-large-lock" else 1000)
         for name, pid in PIDS.items()}
    calls = [
        _event(p["raise-then-lock"], "setrlimit", (8, 0x7FFC1000), 0),
        _event(p["raise-then-lock"], "mlock", (0x7F0000000000, 2 * MIB), 5),
        _event(p["mlockall-future"], "mlockall", (3,), 10),
        _event(p["key-store-32k"], "mlock", (0x7F0000100000, 32 * 1024), 20),
        _event(p["large-lock"], "mlock2", (0x7F0000200000, 128 * MIB, 0), 30),
        _event(p["root-large-lock"], "mlock", (0x7F0000300000, 128 * MIB), 40),
        _event(p["mlockall-current"], "mlockall", (1,), 50),
        _event(p["lock-then-raise"], "mlock", (0x7F0000400000, 2 * MIB), 60),
        _event(p["lock-then-raise"], "setrlimit", (8, 0x7FFC1000), 70),
    ]
    calls += [_event(p["slow-loop"], "mlock", (0x7F0000500000, 4096), 100 + 100 * i)
              for i in range(30)]                                   # 10 calls/s
    calls += [_event(p["storm"], "mlock", (0x7F0000600000 + 4096 * i, 4096), 200 + i * 0.1)
              for i in range(3000)]                                 # 10,000 calls/s
    return sorted(calls, key=lambda event: event.timestamp)


#: what each detection must match (by workload); everything else is benign for it
EXPECTED = {"mlockall-future": ["mlockall-future"], "large-lock": ["large-lock"],
            "memlock-raise-then-lock": ["raise-then-lock"], "lock-storm": ["storm"]}
#: the Sigma raise-then-lock is temporal, not ordered (millisecond timestamps in SIEMs):
#: it also matches the process that locked first and raised its limit after
SIGMA_EXPECTED = dict(EXPECTED, **{"memlock-raise-then-lock": ["raise-then-lock",
                                                               "lock-then-raise"]})


def test_the_rules_match_their_workloads_and_not_the_benign_ones(python, tmp_path, surface):
    jsonl = tmp_path / "ecs.jsonl"
    with open(str(jsonl), "w") as handle:
        for event in workloads():
            handle.write(FORMATS["ecs"](event) + "\n")
    matches = sigma_matches(python, tmp_path, str(jsonl))
    for rule_id in BASE_RULES:
        assert matches[rule_id] is None
    for detection, workload_names in SIGMA_EXPECTED.items():
        assert matches[SIGMA_IDS[detection]] == sorted(PIDS[name] for name in workload_names), \
            detection


def test_the_in_process_detections_agree_with_the_sigma_rules(surface):
    """The same workloads through detect.py fire the same detections on the same
    processes (what the Sigma rules are said to be the same as)."""
    out = []
    detector = Detector(load_rules(), out.append)
    for event in workloads():
        detector.feed(event)
    fired = {}
    for event in out:
        fired.setdefault(event.extra["detection"]["id"], []).append(event.pid)
    assert fired == {detection: [PIDS[name] for name in names]
                     for detection, names in EXPECTED.items()}


def test_the_seeded_attack_subset_holds_every_tag_the_rules_use():
    """sigma_offline.py seeds ATT&CK with tests/sigma/data/attack-subset.json: a tag the
    rules use must be in it (a new tag means adding its object there, from MITRE's data)."""
    import glob
    import re
    from sigma_helpers import HERE
    used = set()
    for path in glob.glob(os.path.join(RULES, "*.yml")):
        with open(path) as handle:
            used.update(re.findall(r"^\s+- attack\.(\S+)$", handle.read(), re.M))
    with open(os.path.join(HERE, "data", "attack-subset.json")) as handle:
        bundle = json.load(handle)
    known = {obj.get("x_mitre_shortname") for obj in bundle["objects"]}
    known |= {ref["external_id"].lower() for obj in bundle["objects"]
              for ref in obj.get("external_references", ())}
    assert used and used <= known, used - known
