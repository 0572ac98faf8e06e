"""Event filters (uid, comm, exe, pid, failures only) and mlockaudit's own pid."""

import pytest

from mlockaudit.event import Event, Process
from mlockaudit.filters import EventFilter, FilterError


def event(pid=10, uid=1000, comm="gpg-agent", exe="/usr/bin/gpg-agent", ret=0):
    return Event("mlock", "audit", Process(pid=pid, uid=uid, comm=comm, exe=exe),
                 args=(1, 2), ret=ret)


@pytest.mark.parametrize("options,accepted", [
    ({}, [True, True, True, True]),
    ({"include_uid": ["1000"]}, [True, False, True, True]),
    ({"exclude_uid": ["0"]}, [True, False, True, True]),
    ({"include_comm": ["ssh*"]}, [False, False, True, False]),
    ({"exclude_comm": ["gpg-agent", "ssh*"]}, [False, False, False, True]),
    ({"include_exe": ["/usr/bin/*"]}, [True, True, False, False]),
    ({"exclude_pid": ["12"]}, [True, True, False, True]),
    ({"include_pid": ["10", "13"]}, [True, False, False, True]),
    ({"failures_only": True}, [False, True, False, True]),
])
def test_filters(options, accepted):
    events = [event(), event(pid=11, uid=0, ret=-22), event(pid=12, comm="sshd", exe="/sbin/sshd"),
              event(pid=13, comm=None, exe=None, ret=None)]
    event_filter = EventFilter(own_pid=1, **options)
    assert [event_filter.accepts(e) for e in events] == accepted


def test_own_process_is_never_reported():
    assert not EventFilter(own_pid=10).accepts(event(pid=10))


def test_bad_numbers_are_errors():
    with pytest.raises(FilterError):
        EventFilter(include_uid=["root"])


def test_wrap_counts_what_it_drops():
    got = []
    event_filter = EventFilter(own_pid=1, failures_only=True)
    emit = event_filter.wrap(got.append)
    for e in (event(ret=0), event(ret=-1)):
        emit(e)
    assert [e.ret for e in got] == [-1] and event_filter.dropped == 1
