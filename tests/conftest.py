"""Shared helpers: paths, the workload's ground truth, and comparing events to it."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
CAPTURES = os.path.join(FIXTURES, "captures")
SCRIPTS = os.path.join(ROOT, "scripts")
CORPUS = os.path.normpath(os.path.join(ROOT, "..", "shared", "corpus", "laurel-testdata"))

sys.path.insert(0, SCRIPTS)


def load_truth(path):
    with open(path) as handle:
        data = json.load(handle)
    return data if isinstance(data, list) else [data]


def expected_calls(truths, with_tid=True):
    """Ground truth -> sorted list of (pid, tid, comm bytes, name, args, ret)."""
    calls = []
    for truth in truths:
        comm = bytes.fromhex(truth["comm_hex"])
        for call in truth["calls"]:
            calls.append((truth["pid"], call["tid"] if with_tid else None, comm, call["name"],
                          tuple(call["args"]), call["ret"]))
    return sorted(calls, key=repr)


def observed_calls(events, with_tid=True):
    calls = []
    for event in events:
        comm = event.comm.encode("utf-8", "surrogateescape") if event.comm is not None else None
        calls.append((event.pid, event.tid if with_tid else None, comm, event.name,
                      tuple(event.args), event.ret))
    return sorted(calls, key=repr)


@pytest.fixture
def collect():
    """A list and an emit() that appends to it."""
    events = []
    return events, events.append
