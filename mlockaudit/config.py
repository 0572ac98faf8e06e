"""The configuration file: every option of ``start`` can be set there, the command line
wins. TOML (``tomllib`` on Python 3.11+, ``tomli`` before).

Keys are the option names with ``_`` or ``-`` (``format``, ``outputs``, ``stats_interval``,
``spool-max-mb``...). A key the command does not have, or a value its option would
reject, is an error that names the key and the file: a typo in a security tool's
configuration must never be silently ignored.

    backend = "audit"
    outputs = ["-", "syslog+tcp://siem.example.net:6514"]
    format = "cef"
    events = "mlock2,mlockall"
    coalesce = 1                # seconds (coalesce.py)
    detections = false          # or a rules file that adds to the shipped ones (detect.py)
"""

import os
import sys

DEFAULT_PATH = "/etc/mlockaudit/mlockaudit.toml"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


def _toml():
    if sys.version_info >= (3, 11):
        import tomllib  # novermin (3.11+ only, tomli before)
        return tomllib
    import tomli
    return tomli


def read(path):
    """The file's table, or ConfigError with the parser's own words (line and column)."""
    toml = _toml()
    try:
        with open(path, "rb") as handle:
            return toml.load(handle)
    except OSError as exc:
        raise ConfigError("cannot read %s: %s" % (path, exc.strerror))
    except toml.TOMLDecodeError as exc:
        raise ConfigError("%s is not valid TOML: %s" % (path, exc))


def apply(ctx, params, path):
    """Fill ``params`` (the command's keyword arguments) from the file at ``path`` for
    every option the command line did not set. Returns the updated dict."""
    import click
    table = read(path)
    options = {}                        # key -> option: the long flag name, or the
    for param in ctx.command.params:    # parameter name (``outputs`` for ``--output``)
        if isinstance(param, click.Option) and param.name != "config_path":
            options[param.name] = param
            for flag in param.opts:
                if flag.startswith("--"):
                    options[flag[2:].replace("-", "_")] = param
    for key, value in table.items():
        param = options.get(key.replace("-", "_"))
        if param is None:
            raise ConfigError("%s: unknown key %r (known: %s)" % (
                path, key, ", ".join(sorted(set(
                    flag[2:] for p in options.values() for flag in p.opts
                    if flag.startswith("--"))))))
        name = param.name
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            continue                                      # the command line wins
        if name == "detections" and value is False:       # ``detections = false``: off
            if ctx.get_parameter_source("detections").name in ("DEFAULT", "DEFAULT_MAP"):
                params["no_detections"] = True
            continue
        if name == "detections" and value is True:        # (the shipped rules: the default)
            continue
        if param.multiple and isinstance(value, str):
            value = [value]
        if isinstance(value, list) and not param.multiple:
            if name == "events":
                value = ",".join(str(item) for item in value)
            else:
                raise ConfigError("%s: key %r takes one value, not a list" % (path, key))
        try:
            params[name] = param.type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise ConfigError("%s: bad value for %r: %s" % (path, key, exc.format_message()))
        if name == "events":
            from .syscalls import SURFACE
            unknown = [n for n in params[name].split(",") if n.strip() not in SURFACE]
            if unknown:
                raise ConfigError("%s: bad value for %r: %s not in the surface (%s)" % (
                    path, key, ", ".join(unknown), ",".join(SURFACE)))
    return params


def default_path():
    """The file ``start`` reads when --config is not given, if it exists."""
    path = os.environ.get("MLOCKAUDIT_CONFIG", DEFAULT_PATH)
    return path if os.path.exists(path) else None
