"""The ``hmtc`` command line: one typer app with a sub-app per area."""

from __future__ import annotations

import functools
import signal
import sys

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperOption

from ..errors import HmtcError
from . import run
from .bench import bench
from .config import app as config_app
from .data import app as data_app
from .encoders import app as encoders_app
from .metrics import metrics_command
from .report import compare_command, report_command, results_command
from .serve import serve_command
from .migrate import migrate_command
from .suggest import suggest_command
from .taxonomy import app as taxonomy_app


def _no_flag_type(display_type_rich):
    """typer's rich help (0.2x) gives every option a type column, so a flag, which takes no
    value, reads ``--force <bool>`` as if it wanted one: flags show none."""
    @functools.wraps(display_type_rich)
    def display(self, ctx):
        return None if self.is_flag and self.metavar is None else display_type_rich(self, ctx)
    return display


if hasattr(TyperOption, "display_type_rich"):          # typer's that draw the column (older ones: no patch needed)
    TyperOption.display_type_rich = _no_flag_type(TyperOption.display_type_rich)

app = typer.Typer(
    name="hmtc",
    help="Hierarchical multi-label text classification: taxonomies, data, training, reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(taxonomy_app, name="taxonomy")
app.add_typer(data_app, name="data")
app.add_typer(encoders_app, name="encoders")
app.add_typer(config_app, name="config")
app.command("train")(run.train)
app.command("eval")(run.eval_)
app.command("predict")(run.predict)
app.command("export")(run.export)
app.command("ensemble")(run.ensemble)
app.command("serve")(serve_command)
app.command("suggest")(suggest_command)
app.command("migrate")(migrate_command)
app.command("metrics")(metrics_command)
app.command("bench")(bench)
app.command("report")(report_command)
app.command("compare")(compare_command)
app.command("results")(results_command)

err_console = Console(stderr=True, emoji=False)


def main() -> None:
    """Entry point: user errors print one clear line (file:line: problem) and exit 2.

    Problems with the files a user names (missing, unreadable, a folder for a file, a full disk)
    are user errors too. ``--debug`` anywhere on the line shows the traceback instead.
    """
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    signal.signal(signal.SIGTERM, _terminated)
    try:
        app()
    except (HmtcError, OSError, UnicodeDecodeError) as e:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(_one_line(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)


def _terminated(signum, frame) -> None:
    """SIGTERM (a service manager stopping hmtc, ``kill``) as an exit that unwinds: files written
    aside are removed and locks released by the code that holds them, as on an error; the exit
    status is the shell's 128 + 15."""
    raise SystemExit(128 + signum)


def _one_line(e: Exception) -> str:
    """The error as one line; an OSError names its file and the system's reason."""
    if isinstance(e, OSError) and not isinstance(e, HmtcError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or type(e).__name__}"
    return " ".join(str(e).split()) or type(e).__name__
