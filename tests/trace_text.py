"""trace_pipe text as the kernel prints it, for the line parser and pairing tests."""

from hypothesis import strategies as st

from mlockaudit.tracefs.lines import LineParser


def kernel_line(comm, pid, text, tgid=None, cpu=1, ts="534.484168", layout="6.x"):
    """What trace_print_context() + the event print for a record, per kernel layout."""
    if layout == "3.10":            # %-5d pid, no tgid column, 4 flag chars
        head = b"%16s-%-5d [%03d] .... " % (comm, pid, cpu)
    elif layout == "4.14":          # (%5d) tgid
        head = b"%16s-%-5d (%5s) [%03d] d..1 " % (comm, pid, b"-----" if tgid is None
                                                   else b"%d" % tgid, cpu)
    else:                           # 5.9+: %-7d pid, (%7d) tgid, 5 flag chars
        head = b"%16s-%-7d (%7s) [%03d] ..... " % (comm, pid, b"-------" if tgid is None
                                                    else b"%d" % tgid, cpu)
    return head + b"%12s: " % ts.encode() + text


ENTRY_TEXT = b"sys_mlock2(start: 0x7f4e48dc8000, len: 0x2000, flags: 1)"
EXIT_TEXT = b"sys_mlock2 -> 0xffffffffffffffea"


comm_bytes = st.binary(min_size=1, max_size=15).filter(lambda b: b"\0" not in b)


def feed_all(text):
    parser = LineParser()
    records = [r for r in (parser.feed(line) for line in text.split(b"\n")) if r is not None]
    parser.finish()
    return parser, records


def expected_comm(comm):
    visible = comm.lstrip(b" ")        # %16s padding and leading spaces look the same
    if not visible or visible == b"<...>":
        return None
    return visible.decode("utf-8", "surrogateescape")
