"""kprobe definitions for the mlock family, for kernels without syscall tracepoints.

There is no ``do_mlock2`` in any kernel: mlock2 and mlock call ``do_mlock``, munlock,
mlockall and munlockall do not. So the probes sit on the syscall entry symbols, which
differ by kernel version and arch; they are looked up in ``available_filter_functions``
or /proc/kallsyms, never guessed from the version:

* x86_64 >= 4.17: ``__x64_sys_NAME(struct pt_regs *)``: the arguments are read from the
  pt_regs the only argument points to: di +0x70, si +0x68, dx +0x60;
* x86_64 compat callers: ``__ia32_sys_NAME``: bx +0x28, cx +0x58, dx +0x60;
* x86_64 < 4.17: ``SyS_NAME`` / ``sys_NAME`` with the arguments in %di, %si, %dx;
* arm64 >= 4.19: ``__arm64_sys_NAME``: x0 +0, x1 +8, x2 +16 of the pt_regs in %x0.

A kretprobe on the same symbol gives the return value (``ret=$retval:s64``). Two symbols
at one address (``__x64_sys_munlockall`` and ``__ia32_sys_munlockall`` both alias
``__do_sys_munlockall``, which takes no arguments) are probed once: a second probe would
report every call twice. The trace then names neither entry, so that probe also fetches
the syscall number, ``orig_ax=`` (x86 ``pt_regs->orig_ax`` at +0x78: 152 for an x86_64
caller of munlockall, 153 for an ia32 one), from which the parser tells the caller's
arch. Value types: ``x64``/``x32`` print 0x-prefixed hex where the
kernel has x-types (newer than 3.10); without them ``u64`` is used, which old kernels
print as bare hex (the parser is told, see ``bare_hex``).

The rest of the surface (mmap, shmctl, setrlimit, prlimit64) is probed on the native
entry only (a 32-bit caller goes through other symbols: __ia32_sys_mmap_pgoff, the ipc()
multiplexer), with up to six arguments (x86_64 pt_regs: di, si, dx, r10 +0x38, r8 +0x48,
r9 +0x40; pre-4.17 SyS_ functions take the C ABI's di, si, dx, cx, r8, r9; arm64 x0..x5)
fetched into the kernel's argument names, so that the entry event's filter is the
tracepoint's (eventfilter.py). The kretprobe of mmap fires for every mmap, like
sys_exit_mmap: ``--mmap-exits none`` leaves it out (``with_return=False``).

Lines in kprobe_events are appended (O_APPEND) and removed one by one (``-:GROUP/EVENT``),
so other tools' probes are never touched; the group is named after our instance.
"""

import os

from .. import host, syscalls

# Per entry-symbol flavour: where each argument is, as fetchargs.
_X64_PTREGS = ("+0x70(%di)", "+0x68(%di)", "+0x60(%di)", "+0x38(%di)", "+0x48(%di)",
               "+0x40(%di)")
_IA32_PTREGS = ("+0x28(%di)", "+0x58(%di)", "+0x60(%di)")
_X64_REGS = ("%di", "%si", "%dx", "%cx", "%r8", "%r9")
_ARM64_PTREGS = ("+0(%x0)", "+8(%x0)", "+16(%x0)", "+24(%x0)", "+32(%x0)", "+40(%x0)")
# Where the syscall number is, for the flavours whose native and compat entries can be one
# function (x86 pt_regs->orig_ax; both entries get the same struct pt_regs *).
_ORIG_AX = {"__x64_sys_": "+0x78(%di)", "__ia32_sys_": "+0x78(%di)"}

# (symbol prefix, arch, fetchargs, argument width in bits), in order of preference.
_FLAVOURS = {
    "x86_64": (("__x64_sys_", "x86_64", _X64_PTREGS, 64), ("SyS_", "x86_64", _X64_REGS, 64),
               ("sys_", "x86_64", _X64_REGS, 64)),
    "i386": (("__ia32_sys_", "i386", _IA32_PTREGS, 32),),
    "aarch64": (("__arm64_sys_", "aarch64", _ARM64_PTREGS, 64),),
}
# Tracee order; each call takes a prefix of the syscall's registers.
_TYPES = {"addr": ("x64", "x32", "u64", "u32"), "len": ("u64", "u32", "u64", "u32"),
          "flags": ("x32", "x32", "u32", "u32")}
_NAMES = {"addr": "start", "len": "len", "flags": "flags"}
#: Tracee's argument name -> the field our probe fetches it into.
FIELD_NAMES = dict(_NAMES)


def arg_names(call):
    """Tracee's argument names of a call, in order."""
    return [arg for arg, _ in syscalls.ARG_SPECS[call]]


def field_names(call):
    """The fields a call's probe fetches, in Tracee's order: the kernel's argument names
    for the rest of the surface, our names for the family."""
    kernel = syscalls.KERNEL_ARG_NAMES.get(call)
    if kernel is not None:
        return list(kernel)
    return [FIELD_NAMES[arg] for arg in arg_names(call)]


def _fetch_type(c_type, width, x_types):
    """Pointers as hex, the rest unsigned: the raw register, as the tracepoints give it."""
    if c_type.endswith("*"):
        return ("x64" if width == 64 else "x32") if x_types else ("u64" if width == 64
                                                                   else "u32")
    return "u64" if width == 64 else "u32"


class Probe(object):
    """One kprobe + kretprobe pair for one call on one arch."""

    def __init__(self, group, name, arch, symbol, fetchargs, width, x_types=True,
                 with_return=True):
        self.group = group
        self.with_return = with_return
        self.name = name
        self.arch = arch
        self.symbol = symbol
        self.prefix = symbol[:-len(name)]          # the entry flavour, e.g. __x64_sys_
        self.event = name if arch != "i386" else name + "_ia32"
        args = []
        kernel_names = syscalls.KERNEL_ARG_NAMES.get(name)
        for position, (arg, c_type) in enumerate(syscalls.ARG_SPECS[name]):
            if kernel_names is not None:
                args.append("%s=%s:%s" % (kernel_names[position], fetchargs[position],
                                          _fetch_type(c_type, width, x_types)))
                continue
            types = _TYPES[arg]
            kind = types[(0 if width == 64 else 1) + (0 if x_types else 2)]
            args.append("%s=%s:%s" % (_NAMES[arg], fetchargs[position], kind))
        self.entry_line = "p:%s/%s %s%s" % (group, self.event, symbol,
                                           "".join(" " + arg for arg in args))
        self.return_line = "r:%s/%s_ret %s ret=$retval:s64" % (group, self.event, symbol)

    def fetch_orig_ax(self, fetcharg):
        """Also record the syscall number (``orig_ax=``): this probe serves two arches."""
        self.entry_line += " orig_ax=%s:u32" % fetcharg

    @property
    def events(self):
        return (self.event, self.event + "_ret") if self.with_return else (self.event,)


def function_names(root):
    """Functions that can be probed: available_filter_functions and /proc/kallsyms (the
    latter also lists aliases such as __x64_sys_munlockall, which the former shows only
    as __do_sys_munlockall)."""
    names = set()
    for path, column in ((os.path.join(root, "available_filter_functions"), 0),
                         ("/proc/kallsyms", 2)):
        try:
            with open(path, "rb") as handle:
                for line in handle:
                    if b"sys_m" in line or b"sys_s" in line or b"sys_prlimit" in line:
                        fields = line.split()
                        if len(fields) > column:
                            names.add(fields[column].decode("ascii", "replace"))
        except OSError:
            continue
    return names


def kallsyms_addresses():
    """name -> address from /proc/kallsyms (zeros when kptr_restrict hides them)."""
    return host.kallsyms() or {}


def plan(group, native_arch, names, events=None, x_types=True, addresses=None,
         no_return=()):
    """The probes for this kernel -> (probes, notes). ``names``: probe-able functions;
    ``no_return``: calls probed without their kretprobe (``--mmap-exits none``)."""
    wanted = [name for name in syscalls.SURFACE if events is None or name in events]
    addresses = addresses if addresses is not None else {}
    arches = [native_arch] + ([syscalls.COMPAT_ARCH[native_arch]]
                              if native_arch in syscalls.COMPAT_ARCH else [])
    probes, notes, probed_at = [], [], {}
    for arch in arches:
        for name in wanted:
            if arch != native_arch and name in syscalls.SURFACE_EXTRA:
                continue                    # (32-bit callers: other symbols, see the doc)
            for prefix, flavour_arch, fetchargs, width in _FLAVOURS.get(arch, ()):
                symbol = prefix + name
                if symbol not in names:
                    continue
                address = addresses.get(symbol)
                if address and int(address, 16) and address in probed_at:
                    first = probed_at[address]
                    notes.append("%s is an alias of %s (one probe, both callers)" % (
                        symbol, first.symbol))
                    # the trace line names neither symbol (it shows __do_sys_munlockall):
                    # the syscall number tells the caller's arch
                    fetch = _ORIG_AX.get(prefix)
                    if fetch is not None and fetch == _ORIG_AX.get(first.prefix) \
                            and "orig_ax=" not in first.entry_line:
                        first.fetch_orig_ax(fetch)
                    break
                probe = Probe(group, name, flavour_arch, symbol, fetchargs, width, x_types,
                              with_return=name not in no_return)
                if address and int(address, 16):
                    probed_at[address] = probe
                probes.append(probe)
                break
            else:
                if arch == native_arch:
                    notes.append("%s: no entry symbol to probe on this kernel" % name)
    return probes, notes
