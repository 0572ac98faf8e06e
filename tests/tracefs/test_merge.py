"""Per-CPU records -> one stream in time order (tracefs/merge.py)."""

from hypothesis import given, settings, strategies as st

from mlockaudit.tracefs.merge import Merger


class R(object):
    def __init__(self, ts, cpu):
        self.ts_ns = ts
        self.cpu = cpu

    def __repr__(self):
        return "R(%d@%d)" % (self.ts_ns, self.cpu)


def test_a_cpu_that_still_has_data_holds_the_others_back():
    merger = Merger(margin_ns=0)
    merger.add(0, [R(10, 0), R(20, 0), R(30, 0)], drained=True, read_start_ns=100)
    merger.add(1, [R(5, 1), R(15, 1)], drained=False, read_start_ns=100, last_ts=15)
    assert [r.ts_ns for r in merger.release()] == [5, 10, 15]
    merger.add(1, [R(25, 1)], drained=True, read_start_ns=200)
    assert [r.ts_ns for r in merger.release()] == [20, 25, 30]
    assert merger.held == 0


def test_the_margin_holds_records_near_the_read_start():
    merger = Merger(margin_ns=50)
    merger.add(0, [R(10, 0), R(90, 0)], drained=True, read_start_ns=100)
    assert [r.ts_ns for r in merger.release()] == [10]
    assert [r.ts_ns for r in merger.release(final=True)] == [90]


def test_bounded_release_is_counted():
    merger = Merger(margin_ns=0, max_held=10)
    merger.add(0, [R(t, 0) for t in range(100)], drained=False, read_start_ns=0, last_ts=99)
    merger.add(1, [], drained=False, read_start_ns=0, last_ts=0)
    out = merger.release()
    assert merger.forced == 1 and len(out) >= 50 and merger.held == 100 - len(out)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1000), max_size=30), min_size=1, max_size=4),
       st.integers(0, 1200))
def test_released_records_are_in_order_and_none_is_lost(cpus, read_start):
    merger = Merger(margin_ns=0)
    total = 0
    for cpu, stamps in enumerate(cpus):
        stamps = sorted(stamps)
        total += len(stamps)
        merger.add(cpu, [R(t, cpu) for t in stamps], drained=True, read_start_ns=read_start)
    out = merger.release() + merger.release(final=True)
    stamps = [r.ts_ns for r in out]
    assert stamps == sorted(stamps) and len(out) == total
