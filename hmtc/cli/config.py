"""``hmtc config show``: a run config as it resolves, and where each value comes from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="Run configs: show one resolved.", no_args_is_help=True)


@app.command("show")
def show(config: Path = typer.Argument(..., help="A run config (TOML; its base chain is read)."),
         set_: Optional[list[str]] = typer.Option(None, "--set", help="section.key=value over the file, as for "
                                                  "hmtc train. Repeatable."),
         all_keys: bool = typer.Option(False, "--all", help="Also the keys left at their defaults."),
         as_json: bool = typer.Option(False, "--json", help="JSON: {key: {value, from}}.")) -> None:
    """Print the config a run of CONFIG would use: every key set by a file of its base chain or a
    --set (with --all, the defaults too), and which file or flag set it.

    Example: hmtc config show experiments/quickstart.toml --set train.epochs=2
    """
    from ..config import config_sources
    values, where = config_sources(config, set_ or [])
    keys = [k for k in sorted(values) if all_keys or where[k] != "default"]
    if as_json:
        typer.echo(json.dumps({k: {"value": values[k], "from": where[k]} for k in keys}, ensure_ascii=False,
                              indent=1, default=str))
        return
    table = Table(title=f"{escape(str(config))}: {len(keys)} of {len(values)} keys"
                        + ("" if all_keys else " (the rest at their defaults: --all shows them)"))
    for col in ("key", "value", "from"):
        table.add_column(col, overflow="fold")
    for k in keys:
        table.add_row(k, escape(json.dumps(values[k], ensure_ascii=False, default=str)), escape(where[k]))
    Console(emoji=False).print(table)
