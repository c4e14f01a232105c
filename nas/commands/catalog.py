"""``nas profiles`` and ``nas space``: list the bundled hardware profiles and search spaces, show one."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from nas.commands.options import JsonOpt
from nas.output import Output


def profiles_list(ctx: typer.Context) -> None:
    """List hardware profiles with their class, target and how latency is obtained."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from nas.hardware.profiles import list_profiles, load_profile

    table = Table()
    for col in ("name", "class", "target", "latency"):
        table.add_column(col)
    for name in list_profiles():
        p = load_profile(name)
        how = p.latency.method
        if how == "rpc":
            how += f" {p.latency.rpc_host}:{p.latency.rpc_port} key {p.latency.rpc_key} (else estimate)"
        table.add_row(p.name, p.hw_class, json.dumps(p.target), how)
    Output().result(table)


def profiles_show(name: Annotated[str, typer.Argument(help="Profile name (see 'nas profiles') or a .yaml path.")]) -> None:
    """Print one validated profile as YAML."""
    import yaml

    from nas.hardware.profiles import load_profile

    Output().result(yaml.safe_dump(load_profile(name).model_dump(mode="json"), sort_keys=False))


def space_list(ctx: typer.Context) -> None:
    """List the bundled search spaces with their size and description."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from nas.search.space import list_spaces, load_space

    table = Table()
    for col in ("name", "configurations", "description"):
        table.add_column(col)
    for name in list_spaces():
        space = load_space(name)
        size = space.size()
        table.add_row(space.name, "continuous" if size is None else f"{size:,}", space.description)
    Output().result(table)


SPACE_EXAMPLES = """
Examples:

  nas space show default

  nas space show mcu --json

  nas space show my_space.yaml
"""


def space_show(
    name: Annotated[str, typer.Argument(help="Space name (see 'nas space') or a .yaml path.")],
    as_json: JsonOpt = False,
) -> None:
    """Print a search space: every searched or pinned field, and its size."""
    from nas.search.space import load_space

    space = load_space(name)
    size = space.size()
    out = Output(as_json=as_json)
    if as_json:
        out.result(json.dumps({"name": space.name, "size": size, "space": space.model_dump(mode="json")}, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{space.name}: {space.description}")
    table.add_column("field")
    table.add_column("distribution or value")
    for field, text in space.describe():
        table.add_row(field, text)
    out.result(table)
    if size is None:
        out.result("size: continuous (a float parameter has no step), so the number of configurations is unbounded")
    else:
        out.result(f"size: {size:,} discrete configurations")
