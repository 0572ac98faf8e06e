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


if __name__ == "__main__":
    main()
