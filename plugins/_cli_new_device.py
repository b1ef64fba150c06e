"""``winhv new-device NAME [--dir DIR]``: scaffold a third-party device package.

The package (see :mod:`winhv.plugins._scaffold` and ``docs/tutorial.md``) installs with
``pip install -e`` and its tests pass at once. A bad name, a pair name an installed plugin
already registers (the package would load as a conflict, and its own tests would fail), or an
occupied folder is a user error: exit 1 with one line on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._scaffold import ScaffoldError, interface_id_for, write

__all__ = ["new_device_command"]


@click.command("new-device")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True,
              help="Folder to create the package folder winhv-NAME in.")
@click.option("--json", "as_json", is_flag=True,
              help="Write one JSON document to stdout (messages go to stderr).")
def new_device_command(name: str, directory: Path, as_json: bool) -> None:
    """Scaffold winhv-NAME: a VSP, a VSC, their protocol, the entry point, a driver set and
    tests using the winhv pytest fixtures. Then: pip install -e DIR/winhv-NAME; pytest."""
    _refuse_a_taken_name(name)
    try:
        root, files = write(name, directory)
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({"name": name, "path": str(root), "files": files,
                               "interface_id": str(interface_id_for(name))}, indent=2))
        return
    click.echo(f"created {root} (pair {name!r}, interface {{{interface_id_for(name)}}})")
    for file in files:
        click.echo(f"  {file}")
    click.echo("next:")
    click.echo(f"  pip install -e {root}")
    click.echo(f"  cd {root} && pytest")


def _refuse_a_taken_name(name: str) -> None:
    from .cli import get_discovery  # cli imports this module

    registry = get_discovery(click.get_current_context()).registry
    if name in registry.names("pair"):
        source = registry.source_of(registry.pair(name))
        raise click.ClickException(
            f"device name: found {name!r}, a pair already registered by {source.distribution} "
            f"{source.version} (entry point {source.entry_point!r}), expected a name no "
            "installed plugin uses (winhv plugins lists them)")
