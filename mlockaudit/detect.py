"""Detections: rules over the stream of calls, evaluated in-process, whose findings are
events like the others (``name`` "detection").

Why in-process: the patterns worth an alert (a lock limit raised and then a large buffer
pinned; mlockall(MCL_FUTURE) by an unexpected program; a lock storm) span calls or need
the exact sequence of one process, which a SIEM sees only after ingesting (and paying
for) every raw call. Here they are answered from the raw calls before ``--coalesce``
folds them, so counts and sequences are exact, and before the output filters, so that a
filter for volume (``--failures-only``, ``--exclude-comm``) cannot blind them: filters
choose which calls are reported, detections watch every call and their findings are
always reported.

Rules come from ``detections.toml`` (shipped in the package, also installed as
``/usr/share/mlockaudit/detections.toml``; its header documents the rule language) and
from a user file, whose rules add to them or replace one by ``id``. Conditions read
arguments by Tracee's name (``Event.arg``), so a rule over ``resource`` or ``length``
works for setrlimit, prlimit64 and mmap as soon as the backends report them.

A detection Event carries the triggering process and call (thread, time, backend) and
``extra["detection"]`` = {``id``, ``title``, ``severity``, ``calls``: [{``name``,
``timestamp``, ``serial``, ``outcome``}] (, ``count`` for a rate rule)}. State is per
process (tgid, a reused pid told apart by its start time), at most MAX_PROCESSES, least recently seen evicted first
(counted in ``evicted``): the process model has no exit event, so the LRU is the bound.
"""

import collections
import fnmatch
import pkgutil

from . import syscalls
from .compat import time_ns

#: Processes with state (a pending first step, a rate window, a cooldown); least recently
#: seen are forgotten first. Each costs a dict of a few small entries.
MAX_PROCESSES = 16384

#: The arguments that say how many bytes a call locks (mlock, mlock2: len; mmap: length).
SIZE_ARGS = ("len", "length")

SEVERITIES = ("informational", "low", "medium", "high", "critical")
TYPES = ("match", "sequence", "rate")
DEFAULT_COOLDOWN_SECONDS = 60

_CONDITION_KEYS = ("calls", "outcomes", "min_bytes", "more_than_bytes", "args", "nonzero_args",
                   "flags_all", "uid_not", "exe_not", "comm_not")
_RULE_KEYS = ("id", "title", "severity", "type", "enabled", "window_seconds", "max_calls",
              "cooldown_seconds", "first", "then") + _CONDITION_KEYS
_FLAG_VALUES = {"MCL_CURRENT": syscalls.MCL_CURRENT, "MCL_FUTURE": syscalls.MCL_FUTURE,
                "MCL_ONFAULT": syscalls.MCL_ONFAULT, "MLOCK_ONFAULT": syscalls.MLOCK_ONFAULT}


class RuleError(ValueError):
    """A rule file cannot be used; the message names the file and the rule."""


def _toml():
    from .config import _toml as toml
    return toml()


def _int(value, what):
    if value.__class__ is not int or value < 0:
        raise RuleError("%s must be a whole number >= 0, not %r" % (what, value))
    return value


def _names(value, what):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RuleError("%s must be a list of strings, not %r" % (what, value))
    return value


def _matcher(patterns):
    exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    globs = [p for p in patterns if p not in exact]
    return lambda value: value is not None and (
        value in exact or any(fnmatch.fnmatchcase(value, glob) for glob in globs))


class Condition(object):
    """What one call must be (a match rule, a step of a sequence, a rate rule's calls)."""

    def __init__(self, table, where):
        self.checks = []
        self.calls = None                       # the call names it can match (None: any)
        unknown = sorted(set(table) - set(_CONDITION_KEYS))
        if unknown:
            raise RuleError("%s: unknown key(s) %s" % (where, ", ".join(unknown)))
        if "calls" in table:
            calls = self.calls = frozenset(_names(table["calls"], where + ".calls"))
            self.checks.append(lambda e: e.name in calls)
        if "outcomes" in table:
            outcomes = frozenset(_names(table["outcomes"], where + ".outcomes"))
            bad = outcomes - {"success", "failure", "unknown"}
            if bad:
                raise RuleError("%s.outcomes: %s is not success, failure or unknown" % (
                    where, ", ".join(sorted(bad))))
            self.checks.append(lambda e: e.outcome in outcomes)
        if "min_bytes" in table:
            least = _int(table["min_bytes"], where + ".min_bytes")
            self.checks.append(lambda e: _size(e, -1) >= least)
        if "more_than_bytes" in table:
            most = _int(table["more_than_bytes"], where + ".more_than_bytes")
            self.checks.append(lambda e: _size(e, -1) > most)
        if "args" in table:
            wanted = table["args"]
            if not isinstance(wanted, dict):
                raise RuleError("%s.args must be a table {name = value}" % where)
            for name, value in wanted.items():
                _int(value, "%s.args.%s" % (where, name))
                self.checks.append(lambda e, n=name, v=value: e.arg(n) == v)
        if "nonzero_args" in table:
            for name in _names(table["nonzero_args"], where + ".nonzero_args"):
                self.checks.append(lambda e, n=name: not _has_arg(e, n) or bool(e.arg(n)))
        if "flags_all" in table:
            mask = 0
            for flag in _names(table["flags_all"], where + ".flags_all"):
                if flag not in _FLAG_VALUES:
                    raise RuleError("%s.flags_all: unknown flag %r (known: %s)" % (
                        where, flag, ", ".join(sorted(_FLAG_VALUES))))
                mask |= _FLAG_VALUES[flag]
            self.checks.append(lambda e: e.flags is not None and e.flags & mask == mask)
        if "uid_not" in table:
            uids = frozenset(_int(uid, where + ".uid_not") for uid in table["uid_not"])
            self.checks.append(lambda e: e.process.uid is not None and e.process.uid not in uids)
        if "exe_not" in table:
            match = _matcher(_names(table["exe_not"], where + ".exe_not"))
            self.checks.append(lambda e: not match(e.process.exe))
        if "comm_not" in table:
            match = _matcher(_names(table["comm_not"], where + ".comm_not"))
            self.checks.append(lambda e: not match(e.process.comm))

    def __call__(self, event):
        for check in self.checks:
            if not check(event):
                return False
        return True


def _has_arg(event, name):
    return any(arg == name for arg, _c_type in syscalls.ARG_SPECS.get(event.name, ()))


_SIZE_AT = {}     # call name -> (its ARG_SPECS entry, index of its size argument or None)


def _size(event, unknown=None):
    """How many bytes the call locks (its ``len`` or ``length``), else ``unknown``. The
    position is looked up once per call name (and again if ARG_SPECS's entry changes)."""
    specs = syscalls.ARG_SPECS.get(event.name, ())
    cached = _SIZE_AT.get(event.name)
    if cached is None or cached[0] is not specs:
        names = [arg for arg, _c_type in specs]
        index = next((names.index(n) for n in SIZE_ARGS if n in names), None)
        cached = _SIZE_AT[event.name] = (specs, index)     # (names: the call table's)
    index = cached[1]
    if index is None or index >= len(event.args) or event.args[index] is None:
        return unknown
    return event.args[index]


class Rule(object):
    def __init__(self, table, source):
        if not isinstance(table, dict):
            raise RuleError("%s: each [[rule]] must be a table" % source)
        rule_id = table.get("id")
        if not isinstance(rule_id, str) or not rule_id:
            raise RuleError("%s: a rule without an id" % source)
        where = "%s: rule %r" % (source, rule_id)
        unknown = sorted(set(table) - set(_RULE_KEYS))
        if unknown:
            raise RuleError("%s: unknown key(s) %s" % (where, ", ".join(unknown)))
        self.id = rule_id
        self.enabled = table.get("enabled", True)
        if self.enabled is not True and self.enabled is not False:
            raise RuleError("%s: enabled must be true or false" % where)
        if not self.enabled:                   # ``id`` and ``enabled = false``: turned off
            return
        self.title = table.get("title", rule_id)
        if not isinstance(self.title, str):
            raise RuleError("%s: title must be a string" % where)
        self.severity = table.get("severity", "medium")
        if self.severity not in SEVERITIES:
            raise RuleError("%s: severity must be one of %s" % (where, ", ".join(SEVERITIES)))
        self.type = table.get("type")
        if self.type not in TYPES:
            raise RuleError("%s: type must be one of %s" % (where, ", ".join(TYPES)))
        window = table.get("window_seconds", 60)
        if value_class(window) not in (int, float) or window <= 0:
            raise RuleError("%s: window_seconds must be a number > 0" % where)
        self.window_ns = int(window * 1000000000)
        cooldown = table.get("cooldown_seconds", DEFAULT_COOLDOWN_SECONDS)
        if value_class(cooldown) not in (int, float) or cooldown < 0:
            raise RuleError("%s: cooldown_seconds must be a number >= 0" % where)
        self.cooldown_ns = int(cooldown * 1000000000)
        conditions = {key: table[key] for key in _CONDITION_KEYS if key in table}
        if self.type == "sequence":
            if conditions:
                raise RuleError("%s: a sequence's conditions go in [rule.first] and "
                                "[rule.then]" % where)
            for step in ("first", "then"):
                if not isinstance(table.get(step), dict):
                    raise RuleError("%s: a sequence needs the table [rule.%s]" % (where, step))
            self.first = Condition(table["first"], where + ".first")
            self.then = Condition(table["then"], where + ".then")
        else:
            if "first" in table or "then" in table:
                raise RuleError("%s: first/then belong to sequence rules" % where)
            self.condition = Condition(conditions, where)
        if self.type == "rate":
            self.max_calls = _int(table.get("max_calls"), where + ": max_calls")

    def could_match(self, name):
        """False when no call named ``name`` can take part in this rule."""
        conditions = (self.first, self.then) if self.type == "sequence" else (self.condition,)
        return any(c.calls is None or name in c.calls for c in conditions)


def value_class(value):
    return value.__class__


def parse_rules(text, source):
    """TOML text -> {id: Rule} (in file order)."""
    toml = _toml()
    try:
        table = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise RuleError("%s is not valid TOML: %s" % (source, exc))
    unknown = sorted(set(table) - {"rule"})
    if unknown:
        raise RuleError("%s: unknown key(s) %s (rules are [[rule]] tables)" % (
            source, ", ".join(unknown)))
    rules = collections.OrderedDict()
    items = table.get("rule", [])
    if not isinstance(items, list):
        raise RuleError("%s: rules are [[rule]] tables" % source)
    for item in items:
        rule = Rule(item, source)
        if rule.id in rules:
            raise RuleError("%s: rule %r is defined twice" % (source, rule.id))
        rules[rule.id] = rule
    return rules


def shipped_text():
    """The shipped rules (mlockaudit/detections.toml = rules/detections.toml), read as
    package data so that the zipapp has them too."""
    return pkgutil.get_data("mlockaudit", "detections.toml").decode("utf-8")


def load_rules(user_path=None, shipped=True):
    """The rules in force: the shipped ones, then a user file's added or replacing them
    by id; disabled ones left out. RuleError names the file and the rule."""
    rules = parse_rules(shipped_text(), "detections.toml (shipped)") if shipped \
        else collections.OrderedDict()
    if user_path is not None:
        try:
            with open(user_path, "rb") as handle:
                text = handle.read().decode("utf-8")
        except OSError as exc:
            raise RuleError("cannot read %s: %s" % (user_path, exc.strerror))
        except UnicodeDecodeError:
            raise RuleError("%s is not UTF-8" % user_path)
        rules.update(parse_rules(text, user_path))
    return [rule for rule in rules.values() if rule.enabled]


def _call_summary(event):
    serial = event.extra.get("serial")
    return {"name": event.name, "timestamp": event.timestamp,
            "serial": serial if serial.__class__ is int else None, "outcome": event.outcome}


class Detector(object):
    """``feed(event)`` every raw call; ``emit`` gets each detection Event."""

    def __init__(self, rules, emit, max_processes=MAX_PROCESSES, clock=time_ns):
        self.rules = list(rules)
        self.emit = emit
        self.max_processes = max_processes
        self.clock = clock
        self._state = collections.OrderedDict()   # tgid -> {rule id: state, "/start": ns}
        self._by_name = {}                        # call name -> the rules it can take part in
        self.fired = {}                           # rule id -> detections emitted
        self.evicted = 0

    def _process_state(self, event):
        """The state of the event's process. Keyed by tgid; the leader's start time, when
        known, tells a reused pid apart (the state starts over). A start time that is
        known for one call and not for the next (/proc read too late) is not a new
        process: a sequence survives it."""
        key = event.process.pid
        start = event.process.start_time
        state = self._state.get(key)
        if state is not None and start is not None and state.get("/start") not in (None, start):
            state = None                          # the pid was reused: a new process
            del self._state[key]
        if state is None:
            if len(self._state) >= self.max_processes:
                self._state.popitem(last=False)
                self.evicted += 1
            state = self._state[key] = {"/start": start}
        else:
            self._state.move_to_end(key)
            if start is not None:
                state["/start"] = start
        return state

    def feed(self, event):
        rules = self._by_name.get(event.name)
        if rules is None:                         # (names come from the call table: few)
            rules = self._by_name[event.name] = [rule for rule in self.rules
                                                 if rule.could_match(event.name)]
        if not rules:
            return
        now = event.timestamp if event.timestamp is not None else self.clock()
        state = None
        for rule in rules:
            if rule.type == "match":
                if rule.condition(event):
                    state = state if state is not None else self._process_state(event)
                    self._fire(rule, state, now, event, [event])
            elif rule.type == "sequence":
                first, then = rule.first(event), rule.then(event)
                if not (first or then):
                    continue
                state = state if state is not None else self._process_state(event)
                pending = state.get(rule.id)
                if then and pending is not None and now - pending[0] <= rule.window_ns:
                    if self._fire(rule, state, now, event, [pending[1], event]):
                        state.pop(rule.id, None)
                if first:
                    state[rule.id] = (now, event)
            elif rule.condition(event):                        # rate
                state = state if state is not None else self._process_state(event)
                key = rule.id + "/rate"
                window = state.get(key)
                if window is None or now - window[0] > rule.window_ns:
                    window = state[key] = [now, event, 0]
                window[2] += 1
                if window[2] > rule.max_calls:
                    self._fire(rule, state, now, event, [window[1], event], count=window[2])
                    state[key] = [now, event, 0]     # (fired or in its cooldown: count anew)

    def _fire(self, rule, state, now, event, calls, count=None):
        """Emit one detection unless the rule fired for this process within its cooldown.
        True when it was emitted."""
        key = rule.id + "/fired"
        last = state.get(key)
        if last is not None and now - last < rule.cooldown_ns:
            return False
        state[key] = now
        detection = {"id": rule.id, "title": rule.title, "severity": rule.severity,
                     "calls": [_call_summary(call) for call in calls]}
        if count is not None:
            detection["count"] = count
        self.fired[rule.id] = self.fired.get(rule.id, 0) + 1
        self.emit(event.replace(name="detection", args=(), ret=None, arch=None,
                                syscall_nr=None, extra={"detection": detection}))
        return True

    def stats(self):
        return {"detections": sum(self.fired.values()), "detection_evicted": self.evicted}
