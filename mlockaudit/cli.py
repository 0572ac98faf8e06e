"""Command line: parse options, call into the package, print. No logic of its own."""

import sys

import click

from . import __version__
from .outputs import Outputs, OutputError
from .syscalls import FAMILY

FORMAT_CHOICES = ("tracee", "ecs", "cef", "leef")


def _parse_events(value):
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in FAMILY]
    if unknown or not names:
        raise click.BadParameter("unknown event(s) %s; the family is %s" % (
            ", ".join(unknown) or "(none)", ",".join(FAMILY)), param_hint="--events")
    return names


def _open_outputs(targets, format_name):
    try:
        return Outputs(list(targets) or ["-"], format_name)
    except (OutputError, ValueError) as exc:
        raise click.UsageError(str(exc))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlockaudit")
def main():
    """Trace mlock, mlock2, munlock, mlockall and munlockall without BPF (audit or tracefs)
    and emit Tracee-compatible events."""


@main.command()
@click.argument("file")
@click.option("--source", type=click.Choice(["auto", "audit", "trace"]), default="auto",
              show_default=True, help="Kind of capture (auto: from its first lines).")
@click.option("-o", "--output", "outputs", multiple=True, metavar="TARGET",
              help="- (stdout, default) or file:PATH; repeatable.")
@click.option("-f", "--format", "format_name", type=click.Choice(FORMAT_CHOICES),
              default="tracee", show_default=True)
@click.option("--events", metavar="LIST", help="Only these calls, e.g. mlock2,mlockall.")
def replay(file, source, outputs, format_name, events):
    """Turn a saved audit log or trace_pipe capture (FILE, - for stdin) into events."""
    from .replay import ReplayError, replay as run_replay
    wanted = _parse_events(events)
    out = _open_outputs(outputs, format_name)
    try:
        stats = run_replay(file, out.emit, source=source, events=wanted)
    except ReplayError as exc:
        out.close()
        click.echo("mlockaudit: %s" % exc, err=True)
        sys.exit(2)
    except BrokenPipeError:
        sys.exit(0)
    finally:
        out.close()
    click.echo(stats.summary(), err=True)
    sys.exit(1 if stats.rejected else 0)


@main.command()
@click.option("--backend", type=click.Choice(["auto", "audit", "tracefs"]), default="auto",
              show_default=True, help="Where events come from (auto: see doctor).")
@click.option("--probe", type=click.Choice(["auto", "tracepoint", "kprobe"]), default="auto",
              show_default=True, help="tracefs: syscall tracepoints or kprobes.")
@click.option("-o", "--output", "outputs", multiple=True, metavar="TARGET",
              help="- (stdout, default) or file:PATH; repeatable.")
@click.option("-f", "--format", "format_name", type=click.Choice(FORMAT_CHOICES),
              default="tracee", show_default=True)
@click.option("--events", metavar="LIST", help="Only these calls, e.g. mlock2,mlockall.")
@click.option("--input", "input_path", metavar="PATH",
              help="audit: read auditd's text instead of netlink: - (as an auditd plugin, "
                   "on stdin) or a log file to follow.")
@click.option("--config", "config_path", metavar="FILE", help="TOML configuration file.")
def start(backend, probe, outputs, format_name, events, input_path, config_path):
    """Trace the mlock family until SIGTERM/SIGINT (Ctrl-C)."""
    from .daemon import Daemon, StartError
    wanted = _parse_events(events)
    if backend == "auto":
        backend = "audit"
    out = _open_outputs(outputs, format_name)
    try:
        code = Daemon(backend, out, events=wanted, input_path=input_path).run()
    except StartError as exc:
        click.echo("mlockaudit: %s" % exc, err=True)
        code = 1
    except OSError as exc:
        click.echo("mlockaudit: cannot start: %s" % exc, err=True)
        code = 1
    finally:
        out.close()
    sys.exit(code)


@main.command()
def cleanup():
    """Remove every rule, probe and instance a previous (crashed) run left, and restore the
    audit settings it changed. Never touches what a running mlockaudit or another tool owns."""
    from .cleanup import CleanupError, run_cleanup
    try:
        done = run_cleanup(log=lambda message: click.echo("mlockaudit: " + message, err=True))
    except CleanupError as exc:
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
    click.echo("## mlockaudit: the mlock family, keyed %s" % audit_rules.KEY)
    for note in notes:
        click.echo("## " + note)
    for rule in family:
        click.echo(rule.to_text())
    click.echo("## while running, start also puts first: %s" % audit_rules.self_rule(
        os.getpid()).to_text().replace("pid=%d" % os.getpid(), "pid=<its pid>"))


if __name__ == "__main__":
    main()
