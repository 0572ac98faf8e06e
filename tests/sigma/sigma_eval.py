"""Run by the Sigma venv's Python (tests/sigma/test_sigma_rules.py starts it): convert
rules/sigma with real pySigma backends, and run each rule over ECS JSON lines with the
sqlite backend. Prints one JSON object on stdout.

    python sigma_eval.py convert BACKEND RULES_DIR
        -> {rule id: {"ok": true, "query": "..."} or {"ok": false, "error": "..."}}
    python sigma_eval.py run RULES_DIR ECS_JSONL FIELDS_JSON
        -> {rule id: [the process.pid of every document (or correlation group) it matched]}

The ECS documents become rows of one table ``logs`` with one column per dotted key
(``event.code``, ``mlockaudit.args.len``), as a SIEM flattens them; lists are stored as
JSON text. FIELDS_JSON (the logsource's field names, tests/sigma/data) adds the columns
no document has, so that a rule over a field absent from this run reads NULL.
"""

import json
import sqlite3
import sys

from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule


def backend(name, **options):
    if name == "splunk":
        from sigma.backends.splunk import SplunkBackend
        return SplunkBackend(**options)
    if name in ("lucene", "eql", "esql"):
        from sigma.backends import elasticsearch
        cls = {"lucene": "LuceneBackend", "eql": "EqlBackend", "esql": "ESQLBackend"}[name]
        return getattr(elasticsearch, cls)(**options)
    if name == "sqlite":
        from sigma.backends.sqlite import sqliteBackend
        return sqliteBackend(timestamp_field="@timestamp", **options)
    raise SystemExit("unknown backend %s" % name)


def rules(directory):
    return SigmaCollection.load_ruleset([directory])


def convert(name, directory):
    out = {}
    collection = rules(directory)
    target = backend(name)            # one backend: a correlation reads its base rules'
    for rule in collection:           # conversions (they come first in each file)
        try:
            if isinstance(rule, SigmaCorrelationRule):
                queries = target.convert_correlation_rule(rule)
            else:
                queries = target.convert_rule(rule)
            out[str(rule.id)] = {"ok": True, "query": "\n".join(str(q) for q in queries)}
        except Exception as exc:               # the backend's own words, for the test
            out[str(rule.id)] = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
    return out


def flatten(doc, prefix="", out=None):
    out = {} if out is None else out
    for key, value in doc.items():
        name = prefix + key
        if isinstance(value, dict):
            flatten(value, name + ".", out)
        elif isinstance(value, list):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def load(connection, jsonl, fields):
    rows = []
    columns = set(fields)
    with open(jsonl) as handle:
        for line in handle:
            row = flatten(json.loads(line))
            rows.append(row)
            columns.update(row)
    columns = sorted(columns)
    quote = lambda name: '"%s"' % name.replace('"', '""')      # noqa: E731
    connection.execute("CREATE TABLE logs (%s)" % ", ".join(quote(c) for c in columns))
    connection.executemany(
        "INSERT INTO logs (%s) VALUES (%s)" % (", ".join(quote(c) for c in columns),
                                               ", ".join("?" for _ in columns)),
        [tuple(row.get(c) for c in columns) for row in rows])


def run(directory, jsonl, fields_path):
    with open(fields_path) as handle:
        taxonomy = json.load(handle)
    fields = [field for info in taxonomy["taxonomy"].values()
              for field in info["field"]["native"]]
    connection = sqlite3.connect(":memory:")
    load(connection, jsonl, fields)
    out = {}
    collection = rules(directory)
    target = backend("sqlite")
    for rule in collection:
        connection.row_factory = sqlite3.Row
        if isinstance(rule, SigmaCorrelationRule):
            query = target.convert_correlation_rule(rule)[0]
            pids = set()
            for row in connection.execute(query):
                pids.add(json.loads(row["group_keys"])["process.pid"])
        else:
            queries = target.convert_rule(rule)
            if not queries:               # a correlation's base rule: no query of its own
                out[str(rule.id)] = None
                continue
            pids = {row["process.pid"] for row in connection.execute(queries[0])}
        out[str(rule.id)] = sorted(pids)
    return out


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "convert":
        result = convert(sys.argv[2], sys.argv[3])
    elif command == "run":
        result = run(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit("usage: sigma_eval.py convert BACKEND DIR | run DIR JSONL FIELDS")
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
