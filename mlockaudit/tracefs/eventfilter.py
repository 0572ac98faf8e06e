"""tracefs event filters for the calls of the surface that only sometimes lock.

The kernel evaluates an event's ``filter`` file before the event takes ring-buffer space
(Documentation/trace/events.rst, "Event filtering"): numeric fields compare with ``==``,
``!=`` and ``&`` (some bit set), terms join with ``&&`` and ``||``. The same
alternatives as the audit rules (syscalls.LOCKING), written with the kernel's argument
names: those are the syscall tracepoints' field names (include/linux/syscalls.h turns the
SYSCALL_DEFINE arguments into fields), and our kprobes fetch into the same names, so one
expression serves both. Syscall tracepoint fields are 8 bytes (the full register), so
``cmd == 11`` compares the register as audit's ``a1=11`` does.

Filters live in the instance's own ``events/`` tree: setting one in our instance changes
nothing for anybody else, and removing the instance removes it.
"""

from .. import syscalls

_TEXT = {"&": "&", "==": "==", "!=": "!="}


def filter_expression(name, arch=None):
    """The filter for ``name``'s entry event (called from ``arch``), or None for calls
    that always lock."""
    alternatives = syscalls.locking_alternatives(name, arch)
    if alternatives is None:
        return None
    fields = syscalls.KERNEL_ARG_NAMES[name]
    terms = []
    for alternative in alternatives:
        conditions = ["%s %s %s" % (fields[position], _TEXT[test],
                                    "0x%x" % value if test == "&" else "%d" % value)
                      for position, test, value in alternative]
        term = " && ".join(conditions)
        terms.append("(%s)" % term if len(conditions) > 1 and len(alternatives) > 1 else term)
    return " || ".join(terms)
