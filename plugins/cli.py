"""The ``winhv`` command line (click): ``plugins``, ``check FILE``, ``hypercalls`` and whatever
commands plugins add through ``winhv_cli_commands``.

Conventions every command keeps (``docs/cli.md``):

* ``--json`` puts one JSON document on stdout and nothing else there; warnings and errors go
  to stderr.
* Exit 0 on success. A user error (bad file, unknown name, failed check) exits 1 with one line
  ``Error: <reason>`` on stderr and no traceback; a usage error exits 2 (click's convention); a
  bug exits 70 with one line, or the traceback when ``WINHV_TRACEBACK=1``.
* Plugins are discovered once per invocation, and only when a command needs them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from ._descriptions import ConfigError, DescriptionError
from ._discovery import DiscoveryResult, PluginFailure, discover
from ._driverset import DriverSet, DriverSetError, load_driver_set, parse_driver_set
from ._registry import ConflictError, Entry, UnknownNameError

__all__ = ["EXIT_INTERNAL", "EXIT_USER_ERROR", "WinhvGroup", "cli", "main"]

#: Exit status of a user error (click's own ``ClickException`` status).
EXIT_USER_ERROR = 1
#: Exit status of an internal error (``EX_SOFTWARE`` of BSD ``sysexits.h``).
EXIT_INTERNAL = 70
_USER_ERRORS = (ConfigError, DescriptionError, ConflictError, UnknownNameError)
_DISCOVERY_KEY = "winhv.discovery"
_PLUGIN_COMMANDS_KEY = "winhv.plugin_commands"


class _InternalError(click.ClickException):
    exit_code = EXIT_INTERNAL

    def format_message(self) -> str:
        return f"internal error: {self.message} (set WINHV_TRACEBACK=1 for the traceback)"


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _DropPluginFailures(logging.Filter):
    """Discovery logs each failed plugin; the command line reports them itself (a ``warning:``
    line, or the ``failed plugins`` listing), so the log record would print them twice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.args, tuple) and len(record.args) == 1
                    and isinstance(record.args[0], PluginFailure))


@contextlib.contextmanager
def _failures_not_logged() -> Iterator[None]:
    log = logging.getLogger("winhv.plugins")
    drop = _DropPluginFailures()
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


def get_discovery(ctx: click.Context) -> DiscoveryResult:
    """The plugins of this invocation: ``obj`` given to ``cli.main``/``CliRunner.invoke`` if it
    is a :class:`DiscoveryResult` (tests), otherwise discovered once and cached."""
    root = ctx.find_root()
    if isinstance(root.obj, DiscoveryResult):
        return root.obj
    if _DISCOVERY_KEY not in root.meta:
        with _failures_not_logged():
            root.meta[_DISCOVERY_KEY] = discover()
    return root.meta[_DISCOVERY_KEY]  # type: ignore[no-any-return]


class WinhvGroup(click.Group):
    """A click group that adds plugin commands lazily and turns user errors into one line."""

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        root = ctx.find_root()
        if _PLUGIN_COMMANDS_KEY not in root.meta:
            discovery = get_discovery(ctx)
            collector = click.Group(self.name)
            for error in discovery.notify("winhv_cli_commands", cli=collector):
                click.echo(f"warning: plugin {error.plugin!r} failed to add its commands: "
                           f"{error.error}", err=True)
            commands: dict[str, click.Command] = {}
            for name, command in collector.commands.items():
                if name in self.commands:
                    click.echo(f"warning: a plugin command named {name!r} is ignored: "
                               "a built-in command has that name", err=True)
                else:
                    commands[name] = command
            root.meta[_PLUGIN_COMMANDS_KEY] = commands
        return root.meta[_PLUGIN_COMMANDS_KEY]  # type: ignore[no-any-return]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self._plugin_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None:
            command = self._plugin_commands(ctx).get(cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException, BrokenPipeError):
            raise  # click's own handling (a closed stdout pipe exits quietly)
        except _USER_ERRORS as exc:
            raise click.ClickException(_one_line(str(exc))) from exc
        except Exception as exc:
            if os.environ.get("WINHV_TRACEBACK") == "1":
                raise
            raise _InternalError(_one_line(f"{type(exc).__name__}: {exc}")) from exc


def _emit_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


def _warn_failures(discovery: DiscoveryResult) -> None:
    for failure in discovery.failures:
        click.echo(f"warning: {failure}", err=True)


def _fail(message: str) -> NoReturn:
    raise click.ClickException(_one_line(message))


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Write one JSON document to stdout (messages go to stderr).")


@click.group(cls=WinhvGroup, name="winhv")
@click.version_option(package_name="winhv", prog_name="winhv")
def cli() -> None:
    """winhv: Hyper-V's architecture as a Python driver framework."""


# ---- winhv plugins ---------------------------------------------------------------------------


def _entry_json(entry: Entry) -> dict[str, Any]:
    d = entry.description
    document: dict[str, Any] = {"name": d.name}
    if hasattr(d, "interface_id"):
        document["interface_id"] = str(d.interface_id)
    for attr in ("version", "versions", "framework_versions"):
        if hasattr(d, attr):
            value = getattr(d, attr)
            document[attr] = list(value) if isinstance(value, tuple) else value
    for attr in ("vsp", "vsc", "host", "guest", "service"):
        if hasattr(d, attr):
            cls = getattr(d, attr)
            document[attr] = f"{cls.__module__}:{cls.__qualname__}"
    document["config"] = [
        {"name": f.name, "type": f.type, "default": f.default, "required": f.required,
         "minimum": f.minimum, "maximum": f.maximum,
         "choices": list(f.choices) if f.choices is not None else None, "doc": f.doc}
        for f in d.config
    ]
    document["summary"] = d.summary
    document["distribution"] = entry.source.distribution
    document["distribution_version"] = entry.source.version
    document["entry_point"] = entry.source.entry_point
    return document


def _plugins_json(discovery: DiscoveryResult) -> dict[str, Any]:
    registry = discovery.registry
    return {
        "plugins": [
            {"name": p.name, "distribution": p.source.distribution,
             "version": p.source.version, "entry_point": p.source.entry_point}
            for p in discovery.plugins
        ],
        "pairs": [_entry_json(e) for e in registry.entries("pair")],
        "ics": [_entry_json(e) for e in registry.entries("ic")],
        "vid_services": [_entry_json(e) for e in registry.entries("vid-service")],
        "failures": [
            {"entry_point": f.entry_point, "distribution": f.distribution,
             "version": f.version, "stage": f.stage, "error": f.error}
            for f in discovery.failures
        ],
    }


def _dist(distribution: str, version: str) -> str:
    return f"{distribution} {version}" if version else distribution


def _print_plugins(discovery: DiscoveryResult) -> None:
    registry = discovery.registry
    click.echo("plugins:")
    for p in discovery.plugins:
        click.echo(f"  {p.source.entry_point or p.name:<16} "
                   f"{_dist(p.source.distribution, p.source.version)}")
    sections = (("pairs", "pair"), ("integration components", "ic"),
                ("VID services", "vid-service"))
    for title, kind in sections:
        entries = registry.entries(kind)  # type: ignore[arg-type]
        click.echo(f"{title}:" if entries else f"{title}: none")
        for e in entries:
            guid = getattr(e.description, "interface_id", None)
            guid_text = f" {{{guid}}}" if guid is not None else ""
            summary = f"  {e.description.summary}" if e.description.summary else ""
            click.echo(f"  {e.name:<16}{guid_text}  "
                       f"[{_dist(e.source.distribution, e.source.version)}]{summary}")
    if discovery.failures:
        click.echo("failed plugins:")
        for f in discovery.failures:
            click.echo(f"  {f.entry_point:<16} [{_dist(f.distribution, f.version)}] {f.error}")


@cli.command("plugins")
@json_option
@click.option("--strict", is_flag=True, help="Exit 1 if any plugin failed to load.")
@click.pass_context
def plugins_command(ctx: click.Context, as_json: bool, strict: bool) -> None:
    """List the discovered plugins: pairs with their interface GUIDs, ICs and VID services,
    each with the distribution it came from, and the plugins that failed with their error."""
    discovery = get_discovery(ctx)
    if as_json:
        _emit_json(_plugins_json(discovery))
    else:
        _print_plugins(discovery)
    if strict and discovery.failures:
        _fail(f"{len(discovery.failures)} plugin(s) failed to load; first: "
              f"{discovery.failures[0]}")


# ---- winhv check -----------------------------------------------------------------------------


def _driver_set_json(driver_set: DriverSet) -> dict[str, Any]:
    host = driver_set.host
    return {
        "file": driver_set.source,
        "valid": True,
        "host": {
            "vmbus_version": host.vmbus_version.name if host.vmbus_version else None,
            "root_memory_mb": host.root_memory_mb,
            "root_processors": host.root_processors,
            "seed": host.seed,
            "services": [{"name": s.name, "config": dict(s.config)} for s in host.services],
        },
        "vms": [
            {
                "name": vm.name,
                "memory_mb": vm.memory_mb,
                "processors": vm.processors,
                "devices": [
                    {"name": d.name, "pair": d.pair,
                     "interface_id": str(d.description.interface_id), "config": dict(d.config)}
                    for d in vm.devices
                ],
                "ics": [{"name": ic.name, "config": dict(ic.config)} for ic in vm.ics],
                "drivers": {str(o.interface_id): o.spec for o in vm.drivers},
            }
            for vm in driver_set.vms
        ],
    }


@cli.command("check")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@json_option
@click.pass_context
def check_command(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Validate the driver set FILE ("-" for stdin) against the format and the plugins."""
    discovery = get_discovery(ctx)
    _warn_failures(discovery)
    try:
        if str(file) == "-":
            driver_set = parse_driver_set(sys.stdin.read(),
                                          source="<stdin>", registry=discovery.registry)
        else:
            driver_set = load_driver_set(file, discovery.registry)
    except DriverSetError as exc:
        if as_json:
            _emit_json({"file": exc.source, "valid": False, "error": {
                "message": str(exc), "path": exc.path, "found": exc.found,
                "expected": exc.expected, "line": exc.line, "column": exc.column}})
        raise
    if as_json:
        _emit_json(_driver_set_json(driver_set))
        return
    click.echo(f"{driver_set.source}: ok, {len(driver_set.vms)} VM(s)")
    for vm in driver_set.vms:
        click.echo(f"  {vm.name}: {vm.memory_mb} MiB, {vm.processors} VP(s), "
                   f"{len(vm.devices)} device(s), {len(vm.ics)} IC(s), "
                   f"{len(vm.drivers)} driver override(s)")


# ---- winhv hypercalls ------------------------------------------------------------------------


def _hypercall_rows() -> list[dict[str, Any]]:
    from winhv._calls import HYPERCALLS
    from winhv.drivers.hv.calls import IMPLEMENTED_HYPERCALLS

    return [
        {
            "code": info.code,
            "code_hex": f"0x{info.code:04X}",
            "name": info.name,
            "class": info.call_class.value,
            "fast": info.fast,
            "variable_header": info.variable_header,
            "implemented": info.code in IMPLEMENTED_HYPERCALLS,
        }
        for info in sorted(HYPERCALLS.values(), key=lambda i: i.code)
    ]


@cli.command("hypercalls")
@json_option
@click.option("--implemented", "only_implemented", is_flag=True,
              help="Only the calls this hypervisor implements.")
def hypercalls_command(as_json: bool, only_implemented: bool) -> None:
    """List the hypercall table (TLFS call codes): code, name, class, and whether this
    hypervisor implements the call (others answer HV_STATUS_INVALID_HYPERCALL_CODE)."""
    rows = _hypercall_rows()
    implemented = sum(r["implemented"] for r in rows)
    if only_implemented:
        rows = [r for r in rows if r["implemented"]]
    if as_json:
        _emit_json({"hypercalls": rows, "total": len(_hypercall_rows()),
                    "implemented": implemented})
        return
    click.echo(f"{'code':<8}{'name':<44}{'class':<8}{'fast':<6}implemented")
    for r in rows:
        click.echo(f"{r['code_hex']:<8}{r['name']:<44}{r['class']:<8}"
                   f"{'yes' if r['fast'] else 'no':<6}{'yes' if r['implemented'] else 'no'}")
    click.echo(f"{implemented} of {len(_hypercall_rows())} call codes implemented", err=True)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point: run ``winhv`` with ``argv`` (default ``sys.argv[1:]``)."""
    cli.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="winhv")
    raise SystemExit(0)  # cli.main always exits in standalone mode; this satisfies NoReturn


def _register_builtin_commands() -> None:
    from ._cli_new_device import new_device_command
    from ._cli_run import register

    register(cli)
    cli.add_command(new_device_command)


_register_builtin_commands()
