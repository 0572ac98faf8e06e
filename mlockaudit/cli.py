"""Command line: parse options, call into the package, print. No logic of its own."""

import sys

import click

from . import __version__
from .outputs import OutputError, OutputOptions, Outputs
from .syscalls import FAMILY, SURFACE

FORMAT_CHOICES = ("tracee", "ecs", "cef", "leef")


def _parse_events(value):
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in SURFACE]
    if unknown or not names:
        raise click.BadParameter("unknown event(s) %s; the surface is %s" % (
            ", ".join(unknown) or "(none)", ",".join(SURFACE)), param_hint="--events")
    return names


def _open_outputs(targets, format_name, delivery=None):
    try:
        options = OutputOptions(**(delivery or {}))
        return Outputs(list(targets) or ["-"], format_name, options)
    except (OutputError, ValueError) as exc:
        raise click.UsageError(str(exc))


class FileMode(click.ParamType):
    """``--file-mode 0640``: an octal string, as chmod takes it (safefiles.parse_mode)."""
    name = "MODE"

    def convert(self, value, param, ctx):
        from .safefiles import parse_mode
        if isinstance(value, int) and not isinstance(value, bool):
            # (TOML: 0640 is not an integer and 640 would be decimal: only a string is clear)
            self.fail("give the mode as an octal string, e.g. \"0640\" (not %r)" % value,
                      param, ctx)
        try:
            parse_mode(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(value).strip()


TARGETS_HELP = ("- (stdout, default), file:PATH, syslog: (/dev/log; syslog:PATH another "
                "socket), syslog+udp://HOST[:514], syslog+tcp://HOST[:514], "
                "syslog+tls://HOST[:6514]; repeatable.")

_DELIVERY_OPTIONS = (
    click.option("--spool", "spool_dir", metavar="DIR",
                 help="syslog TCP/TLS/local: keep what the collector cannot take yet on disk "
                      "here (sent once it is back, even after a restart)."),
    click.option("--spool-max-mb", type=click.IntRange(min=1), default=256, show_default=True,
                 help="Spool size cap; beyond it the oldest messages are dropped (and "
                      "counted as lost)."),
    click.option("--tls-ca", metavar="FILE", help="CA bundle to verify the collector with "
                                                  "(default: the system's)."),
    click.option("--tls-cert", metavar="FILE", help="Client certificate (PEM) for TLS."),
    click.option("--tls-key", metavar="FILE", help="Its private key (PEM), if not in --tls-cert."),
    click.option("--tls-insecure", is_flag=True,
                 help="Do not verify the collector's certificate (not recommended)."),
    click.option("--syslog-pen", type=click.IntRange(min=1, max=2 ** 31 - 1), default=32473,
                 show_default=True, help="Private enterprise number of the SD-ID "
                 "mlockaudit@PEN (32473 is IANA's example number)."),
    click.option("--syslog-facility", default="authpriv", show_default=True, metavar="NAME",
                 help="Syslog facility (name or 0..23)."),
    click.option("--severity-success", type=click.IntRange(0, 7), default=6, show_default=True,
                 help="Syslog severity of successful calls."),
    click.option("--severity-failure", type=click.IntRange(0, 7), default=4, show_default=True,
                 help="Syslog severity of failed calls (and of calls whose exit was not seen)."),
    click.option("--file-mode", type=FileMode(), default="0600", show_default=True,
                 help="Mode of a file: output mlockaudit creates (events carry command "
                      "lines: 0640 to grant a log group read, never more than 0644); an "
                      "existing file loses the bits outside it."),
    click.option("--stats-interval", type=click.FloatRange(min=0), default=60.0,
                 show_default=True, metavar="SECONDS",
                 help="Send a stats message (MSGID stats) to the syslog targets this often; "
                      "0: never."),
)


def _output_options(command):
    """-o, -f and --events: the same on replay and start."""
    for option in reversed((
            click.option("-o", "--output", "outputs", multiple=True, metavar="TARGET",
                         help=TARGETS_HELP),
            click.option("-f", "--format", "format_name", type=click.Choice(FORMAT_CHOICES),
                         default="tracee", show_default=True),
            click.option("--events", metavar="LIST",
                         help="Only these calls, e.g. mlock2,mlockall."))):
        command = option(command)
    return command


_PIPELINE_OPTIONS = (
    click.option("--coalesce", type=click.FloatRange(min=0, min_open=True), default=None,
                 metavar="SECONDS",
                 help="Identical calls of a process within SECONDS leave as the first call "
                      "plus one summary with mlockaudit.count (exact counts; off by default)."),
    click.option("--detections", "detections", metavar="FILE", default=None,
                 help="Detection rules that add to (or, by id, replace) the shipped ones."),
    click.option("--no-detections", is_flag=True, default=False,
                 help="Do not evaluate detection rules (on by default: see README)."),
)


def _pipeline_options(command, replay=False):
    """--coalesce and the detections (pipeline.py). ``replay``: detections are off unless
    asked for (--detect, or --detections FILE), so that a replay still gives exactly the
    calls of a capture; ``start`` runs them by default (--no-detections)."""
    options = _PIPELINE_OPTIONS[:2] + ((click.option(
        "--detect", is_flag=True, default=False,
        help="Evaluate the shipped detection rules over the capture too."),) if replay
        else _PIPELINE_OPTIONS[2:])
    for option in reversed(options):
        command = option(command)
    return command


def _replay_pipeline_options(command):
    return _pipeline_options(command, replay=True)


def _check_rules(options, fail=None):
    """The detection rules load (RuleError -> a usage error naming the file and rule)."""
    from .detect import RuleError
    from .pipeline import rules_for
    try:
        return rules_for(options)
    except RuleError as exc:
        raise (fail or click.UsageError)(str(exc))


def _delivery_options(command):
    for option in reversed(_DELIVERY_OPTIONS):
        command = option(command)
    return command


def _delivery(kwargs):
    """The delivery options of a command's kwargs -> OutputOptions arguments."""
    return {
        "spool_dir": kwargs.pop("spool_dir"), "spool_max_mb": kwargs.pop("spool_max_mb"),
        "tls_ca": kwargs.pop("tls_ca"), "tls_cert": kwargs.pop("tls_cert"),
        "tls_key": kwargs.pop("tls_key"), "tls_insecure": kwargs.pop("tls_insecure"),
        "syslog_pen": kwargs.pop("syslog_pen"), "facility": kwargs.pop("syslog_facility"),
        "severity_success": kwargs.pop("severity_success"),
        "severity_failure": kwargs.pop("severity_failure"),
        "stats_interval": kwargs.pop("stats_interval"),
        "file_mode": kwargs.pop("file_mode"),
    }


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlockaudit")
def main():
    """Trace mlock, mlock2, munlock, mlockall and munlockall without BPF (audit or tracefs)
    and emit Tracee-compatible events."""


@main.command()
@click.argument("file")
@click.option("--source", type=click.Choice(["auto", "audit", "trace"]), default="auto",
              show_default=True, help="Kind of capture (auto: from its first lines).")
@_output_options
@_replay_pipeline_options
@_delivery_options
def replay(file, source, outputs, format_name, events, coalesce, detections, detect,
           **delivery):
    """Turn a saved audit log or trace_pipe capture (FILE, - for stdin) into events.

    Exit status: 0; 1 when lines were rejected or a syslog target lost messages; 2 when
    the input cannot be read, is neither kind, or an output cannot be written."""
    from .pipeline import Pipeline
    from .replay import ReplayError, replay as run_replay
    from .transports.stream import OutputWriteError
    wanted = _parse_events(events)
    rules = _check_rules({"detections": detections,
                          "no_detections": not (detect or detections)})
    out = _open_outputs(outputs, format_name, dict(_delivery(delivery), block_when_full=True))
    pipeline = Pipeline(out.emit, coalesce=coalesce, rules=rules)
    stats = None
    failure = None
    try:
        stats = run_replay(file, pipeline.emit, source=source, events=wanted)
        pipeline.flush()
    except (ReplayError, OutputWriteError) as exc:
        failure = str(exc)
    except BrokenPipeError:                    # the reader has seen enough: quietly
        _close_quietly(out)
        sys.exit(0)
    try:
        out.close()
    except OutputWriteError as exc:
        failure = failure or str(exc)
    except BrokenPipeError:
        sys.exit(0)
    if failure is not None:
        click.echo("mlockaudit: %s" % failure, err=True)
        sys.exit(2)
    summary = stats.summary()
    for key, value in pipeline.stats().items():
        summary += "; %s=%d" % (key, value)
    click.echo(summary, err=True)
    delivery_summary = out.summary()
    if delivery_summary:
        click.echo("delivery: " + delivery_summary, err=True)
    sys.exit(1 if stats.rejected or out.stats()["lost"] else 0)


def _close_quietly(out):
    try:
        out.close()
    except Exception:                          # (already leaving: nothing more to say)
        pass


@main.command()
@click.option("--backend", type=click.Choice(["auto", "audit", "tracefs"]), default="auto",
              show_default=True, help="Where events come from (auto: see doctor).")
@click.option("--probe", type=click.Choice(["auto", "tracepoint", "kprobe"]), default="auto",
              show_default=True, help="tracefs: syscall tracepoints or kprobes.")
@_output_options
@click.option("--input", "input_path", metavar="PATH",
              help="audit: read auditd's text instead of netlink: - (as an auditd plugin, "
                   "on stdin) or a log file to follow.")
@click.option("--buffer-kb", type=click.IntRange(64, 1 << 20), default=None, metavar="KB",
              help="tracefs: ring buffer per CPU (default 16384, at most 128 MB in all).")
@click.option("--mmap-exits", type=click.Choice(["all", "none"]), default="all",
              show_default=True,
              help="tracefs: trace every mmap exit to pair the few MAP_LOCKED entries with "
                   "their return value (all; each plain mmap then costs one ring-buffer "
                   "event), or none (mmap events carry returnValue null).")
@click.option("--batch-ms", type=click.IntRange(0, 1000), default=None, metavar="MS",
              help="Read at most every MS ms while little arrives (default 50): the most "
                   "an event waits before it is read; 0 reads every record at once.")
@click.option("--include-uid", multiple=True, metavar="UID", help="Only these real uids.")
@click.option("--exclude-uid", multiple=True, metavar="UID", help="Not these real uids.")
@click.option("--include-comm", multiple=True, metavar="NAME",
              help="Only these comms (exact or glob, e.g. 'ssh*').")
@click.option("--exclude-comm", multiple=True, metavar="NAME", help="Not these comms.")
@click.option("--include-exe", multiple=True, metavar="PATH",
              help="Only these executables (exact or glob).")
@click.option("--exclude-exe", multiple=True, metavar="PATH", help="Not these executables.")
@click.option("--include-pid", multiple=True, metavar="PID", help="Only these pids (tgid).")
@click.option("--exclude-pid", multiple=True, metavar="PID", help="Not these pids.")
@click.option("--failures-only", is_flag=True, default=False,
              help="Only calls that failed (or whose return was not seen).")
@_pipeline_options
@click.option("--config", "config_path", metavar="FILE",
              help="TOML configuration (default: /etc/mlockaudit/mlockaudit.toml if it "
                   "exists); the command line wins.")
@_delivery_options
@click.pass_context
def start(ctx, **params):
    """Trace the mlock family until SIGTERM/SIGINT (Ctrl-C)."""
    from .daemon import Daemon, StartError
    from .transports.stream import OutputWriteError
    command_line = dict(params)
    options = _start_options(ctx, command_line)
    daemon = Daemon(options, _start_outputs,
                    # SIGHUP: the config file again, the command line still wins
                    reload=lambda: _start_options(ctx, command_line, fail=ValueError))
    code = 1
    try:
        code = daemon.run()
    except StartError as exc:
        click.echo("mlockaudit: %s" % exc, err=True)
    except OutputWriteError as exc:            # (a full disk under a file: output)
        click.echo("mlockaudit: %s" % exc, err=True)
    except (OSError, ImportError) as exc:          # ImportError: pyroute2 (audit)
        click.echo("mlockaudit: cannot start: %s" % exc, err=True)
    finally:
        try:
            daemon.outputs.close()
        except OutputWriteError as exc:
            click.echo("mlockaudit: %s" % exc, err=True)
            code = 1
    sys.exit(code)


def _start_options(ctx, params, fail=None):
    """The effective start options: the config file, then the command line over it."""
    from . import config
    path = params.get("config_path") or config.default_path()
    options = dict(params)
    if path is not None:
        try:
            options = config.apply(ctx, options, path)
        except config.ConfigError as exc:
            raise (fail or click.UsageError)(str(exc))
    options["events"] = _parse_events(options.get("events"))
    from .daemon import make_filter
    from .filters import FilterError
    try:
        make_filter(options)
    except FilterError as exc:
        raise (fail or click.UsageError)(str(exc))
    _check_rules(options, fail)
    return options


def _start_outputs(options, reopening=False):
    """``reopening`` (SIGHUP): a refused file: output is reported and counted as lost,
    not a reason to stop."""
    return _open_outputs(options["outputs"], options["format_name"],
                         dict(_delivery(dict(options)), refused_file_is_loss=reopening))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def doctor(as_json):
    """What this kernel offers, which backend start picks, and why."""
    from .doctor import probe_host
    import json
    report = probe_host()
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        click.echo(_doctor_text(report))
    sys.exit(0 if report["selected"] else 1)


def _doctor_text(report):
    audit, tracefs = report["backends"]["audit"], report["backends"]["tracefs"]
    yes = lambda flag: "yes" if flag else "no"          # noqa: E731
    lines = [
        "kernel       %s (%s)" % (report["kernel"]["release"], report["kernel"]["machine"]),
        "lockdown     %s" % (report["lockdown"] or "not available"),
        "BPF          %s (%s)" % ("likely" if report["bpf"]["likely_works"] else "no",
                                  report["bpf"]["why"]),
        "calls        %s" % ", ".join("%s%s" % (name, "" if present else " (missing)")
                                      for name, present in report["calls"].items()),
        "",
        "audit        %s: %s" % ("available" if audit["available"] else "unavailable",
                                 audit["why"]),
    ]
    if audit["status"]:
        status = audit["status"]
        lines.append("             enabled=%(enabled)d pid=%(pid)d backlog_limit=%(backlog_limit)d "
                     "rate_limit=%(rate_limit)d lost=%(lost)d" % status)
        lines.append("             read mode: %s; multicast by kernel version: %s" % (
            audit["mode"], yes(audit["multicast"])))
    lines += [
        "tracefs      %s: %s" % ("available" if tracefs["available"] else "unavailable",
                                 tracefs["why"]),
        "             syscall tracepoints: %s; kprobes: %s; instances: %s" % (
            yes(tracefs["tracepoints"]), yes(tracefs["kprobes"]), yes(tracefs["instances"])),
    ]
    for name, info in sorted((tracefs.get("surface") or {}).items()):
        lines.append("             %s: tracepoint %s, in-kernel event filter %s" % (
            name, yes(info["tracepoint"]), yes(info["event_filter"])))
    for name, info in sorted((report.get("surface_audit") or {}).items()):
        lines.append("audit rule   %s: fields %s: %s" % (
            name, " | ".join(info["fields"]), "supported" if info["supported"] else "no"))
    lines += [
        "",
        "start picks  %s: %s" % (report["selected"] or "nothing", report["why"]),
    ]
    return "\n".join(lines)


@main.command()
def cleanup():
    """Remove every rule, probe and instance a previous (crashed) run left, and restore the
    audit settings it changed. Never touches what a running mlockaudit or another tool owns."""
    from .cleanup import CleanupError, run_cleanup
    from .safefiles import UnsafePath
    try:
        done = run_cleanup(log=lambda message: click.echo("mlockaudit: " + message, err=True))
    except (CleanupError, UnsafePath) as exc:   # (UnsafePath: a planted run directory)
        click.echo("mlockaudit: %s" % exc, err=True)
        sys.exit(1)
    for line in done:
        click.echo(line)
    if not done:
        click.echo("nothing to clean up")


@main.command()
@click.option("--arch", type=click.Choice(["x86_64", "aarch64"]), default=None,
              help="Machine to write the rules for (default: this one).")
@click.option("--events", metavar="LIST", help="Only these calls.")
def rules(arch, events):
    """Print the audit rules (auditctl syntax) start installs on this kernel."""
    from .audit import rules as audit_rules
    from .syscalls import host_arch
    import os
    wanted = _parse_events(events)
    native = arch or host_arch(os.uname().machine)
    # for another machine nothing can be asked of this kernel: every call is listed
    kallsyms = None if arch is None else {prefix + name for prefix in ("sys_", "compat_sys_")
                                          for name in FAMILY}
    family, notes = audit_rules.family_rules(native, wanted, kallsyms=kallsyms)
    click.echo("## mlockaudit: the memory-locking surface (the mlock family; mmap MAP_LOCKED, "
               "shmctl SHM_LOCK/SHM_UNLOCK, RLIMIT_MEMLOCK changes), keyed %s" % audit_rules.KEY)
    for note in notes:
        click.echo("## " + note)
    for rule in family:
        click.echo(rule.to_text())
    click.echo("## while running, start also puts first: %s" % audit_rules.self_rule(
        os.getpid()).to_text().replace("pid=%d" % os.getpid(), "pid=<its pid>"))


if __name__ == "__main__":
    main()
