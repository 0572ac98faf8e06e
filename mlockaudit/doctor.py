"""What this host offers and what ``start --backend auto`` picks, with the reason for each.
Shared by ``mlockaudit doctor`` and the daemon's auto-selection, so they cannot disagree.

The order of preference, and why:

1. **audit**, when audit is already enabled (or when tracefs cannot be used): the kernel
   makes callers wait instead of dropping when mlockaudit is the audit daemon; beside
   auditd it reads the multicast group without disturbing it; each record carries what
   the call's process was at that moment (ppid, uid/euid/auid, session, exe, command
   line) with no /proc race; 32-bit callers are covered by the b32 rule; it works under
   ``lockdown=confidentiality``, where tracefs is closed.
2. **tracefs**, when audit is disabled (enabling it would leave every process that was
   already running unaudited until it forks or execs: its audit context is made at fork)
   or when audit cannot be read (another daemon owns it on a kernel without multicast):
   syscall tracepoints, or kprobes where the tracepoints are missing. Its costs: the ring
   buffer overwrites under a storm (counted, never hidden), process details come from
   /proc after the fact, and syscall tracepoints miss 32-bit callers on x86_64 (kprobes
   on the __ia32_sys_* entries do not).

Probing never changes the host: securityfs is mounted only to read the lockdown mode and
unmounted right after; tracefs is looked for, not mounted (``start`` mounts it).
"""

import os

from . import host, procfs
from .host import TRACEFS_PATHS, kernel_version, lockdown_mode
from .syscalls import FAMILY, SURFACE_EXTRA


def probe_bpf(version, lockdown):
    """Informational: could Tracee (eBPF, CO-RE) run here instead?"""
    btf = os.path.exists("/sys/kernel/btf/vmlinux")
    reasons = []
    if version < (5, 4):
        reasons.append("kernel %d.%d is older than 5.4" % version)
    if not btf:
        reasons.append("no BTF (/sys/kernel/btf/vmlinux)")
    if lockdown == "confidentiality":
        reasons.append("lockdown=confidentiality blocks BPF reads")
    return {"btf": btf, "likely_works": not reasons,
            "why": "; ".join(reasons) if reasons else "kernel >= 5.4 with BTF: Tracee is an option"}


def probe_tracefs(lockdown):
    """What tracefs offers. When it is not mounted, it is mounted for the look and
    unmounted again (start mounts it itself, and unmounts it at stop)."""
    root = host.find_tracefs()
    mounted_here = False
    if root is None and lockdown != "confidentiality" and os.geteuid() == 0 \
            and os.path.isdir(TRACEFS_PATHS[0]):
        mounted_here = host.mount("tracefs", TRACEFS_PATHS[0])
        root = host.find_tracefs() if mounted_here else None
    try:
        info = _probe_tracefs(root, lockdown)
    finally:
        if mounted_here:
            host.unmount(TRACEFS_PATHS[0])
    info["mounted"] = root is not None and not mounted_here
    return info


def _probe_tracefs(root, lockdown):
    info = {"available": False, "root": root, "tracepoints": False, "kprobes": False,
            "instances": False, "features": {}, "why": ""}
    if lockdown == "confidentiality":
        info["why"] = "lockdown=confidentiality: tracefs is closed"
        return info
    if root is None:
        info["why"] = "no tracefs (not mounted at %s and it cannot be mounted)" % (
            " or ".join(TRACEFS_PATHS))
        return info
    events = os.path.join(root, "events", "syscalls")
    present = [name for name in FAMILY
               if os.path.isdir(os.path.join(events, "sys_enter_" + name))
               and os.path.isdir(os.path.join(events, "sys_exit_" + name))]
    info["tracepoint_calls"] = present
    info["tracepoints"] = bool(present)
    info["surface"] = surface_tracepoints(events)
    info["kprobes"] = os.path.exists(os.path.join(root, "kprobe_events"))
    info["instances"] = os.path.isdir(os.path.join(root, "instances"))
    try:
        with open(os.path.join(root, "README")) as handle:
            readme = handle.read()
    except OSError:
        readme = ""
    info["features"] = {"$argN": "$arg<N>" in readme, "$comm": "$comm" in readme,
                        "x-types": "x8/16/32/64" in readme}
    if not info["instances"]:
        info["why"] = "no tracefs instances (kernel older than 3.10?)"
    elif info["tracepoints"]:
        info["available"] = True
        info["why"] = "syscall tracepoints for %s" % ",".join(present)
    elif info["kprobes"]:
        info["available"] = True
        info["why"] = "no syscall tracepoints; kprobe_events on the syscall entry symbols"
    else:
        info["why"] = "neither syscall tracepoints nor kprobe_events"
    return info


def surface_tracepoints(events_dir):
    """Per call of the surface beyond the family: its sys_enter/sys_exit tracepoints and
    whether the entry takes an event filter (``filter`` file: the locking-only filter
    runs in the kernel). Where they are missing, start falls back to kprobes."""
    out = {}
    for name in SURFACE_EXTRA:
        enter = os.path.join(events_dir, "sys_enter_" + name)
        out[name] = {"tracepoint": os.path.isdir(enter) and
                     os.path.isdir(os.path.join(events_dir, "sys_exit_" + name)),
                     "event_filter": os.path.exists(os.path.join(enter, "filter"))}
    return out


def surface_audit():
    """Per call of the surface beyond the family: the audit rule fields it needs. a0..a3
    with =, != and & (AUDIT_ARG0..3, AUDIT_BIT_MASK) are in every kernel with syscall
    auditing (2.6.x), so this is a statement, not a probe; the rule texts are what
    ``mlockaudit rules`` prints."""
    from .syscalls import LOCKING
    text = {"&": "&0x%x", "==": "=%d", "!=": "!=%d"}
    return {name: {"fields": [" ".join("a%d%s" % (position, text[test] % value)
                                       for position, test, value in alternative)
                              for alternative in LOCKING[name]],
                   "supported": True} for name in SURFACE_EXTRA}


def probe_audit(version):
    info = {"available": False, "enabled": None, "mode": None, "why": "",
            "multicast": version >= (3, 16), "status": None, "daemon": None}
    try:
        from .audit.netlink import AuditControl
        with AuditControl() as control:
            status = control.status()
    except ImportError as exc:                      # PyrouteMissing included
        info["why"] = str(exc)
        return info
    except OSError as exc:
        info["why"] = "cannot talk to the kernel's audit (NETLINK_AUDIT): %s" % (
            exc.strerror or exc)
        return info
    from .audit.backend import choose_mode
    info["status"] = status
    info["enabled"] = status["enabled"]
    pid = status["pid"]
    if pid:
        comm = procfs.read_bytes("/proc/%d/comm" % pid)
        info["daemon"] = {"pid": pid, "alive": procfs.process_alive(pid),
                          "comm": comm.decode("utf-8", "replace").strip() if comm else None}
    mode, why = choose_mode(status)
    info["mode"] = mode
    info["why"] = why
    info["available"] = mode is not None
    if status["enabled"] == 2 and mode is not None:
        info["why"] += "; audit is locked (enabled=2): rules cannot be added until reboot"
        info["available"] = False
    return info


def calls_present():
    from .audit.rules import available_calls
    arch = host.native_arch()
    if arch is None:
        return {}
    return {name: reason is None for name, reason in available_calls(arch, arch).items()}


def select_backend(report):
    """(backend or None, why) following the order of preference in the module docstring."""
    audit, tracefs = report["backends"]["audit"], report["backends"]["tracefs"]
    if audit["available"] and audit["enabled"] in (1, 2):
        return "audit", "audit is enabled: %s" % audit["why"]
    if tracefs["available"]:
        if audit["available"]:
            return "tracefs", ("audit is disabled, and enabling it would leave every running "
                               "process unaudited until it forks or execs; tracefs: %s"
                               % tracefs["why"])
        return "tracefs", "audit cannot be used (%s); tracefs: %s" % (audit["why"], tracefs["why"])
    if audit["available"]:
        return "audit", ("tracefs cannot be used (%s); audit will be enabled (processes "
                         "already running are not audited until they fork or exec)"
                         % tracefs["why"])
    return None, ("nothing works here: audit: %s; tracefs: %s. Boot with audit=1 or mount "
                  "tracefs (mount -t tracefs nodev /sys/kernel/tracing), and run as root"
                  % (audit["why"], tracefs["why"]))


def probe_host():
    release = host.kernel_release()
    version = kernel_version(release)
    lockdown = lockdown_mode()
    report = {
        "kernel": {"release": release, "version": "%d.%d" % version,
                   "machine": host.machine(), "arch": host.native_arch()},
        "lockdown": lockdown,
        "bpf": probe_bpf(version, lockdown),
        "calls": calls_present(),
        "surface_audit": surface_audit(),
        "backends": {"audit": probe_audit(version), "tracefs": probe_tracefs(lockdown)},
    }
    report["selected"], report["why"] = select_backend(report)
    return report
