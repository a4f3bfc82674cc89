"""``hmtc report``, ``hmtc compare`` and ``hmtc results``.

The library is imported inside each command (torch and transformers take seconds to load), so
`hmtc --help` and the other commands start at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

err = Console(stderr=True, emoji=False)


def report_command(run: Path = typer.Argument(..., help="An evaluated run folder (after hmtc eval)."),
                   top_bad: int = typer.Option(50, "--top-bad", help="Worst samples kept in bad_cases.jsonl."),
                   top_pairs: int = typer.Option(20, "--top-pairs", help="Sibling-confusion pairs shown.")) -> None:
    """Write report.md, a self-contained report.html, their plots and bad_cases.jsonl into the run folder."""
    from ..report import write_report
    files = write_report(run, top_bad=top_bad, top_pairs=top_pairs)
    for path in files.values():
        err.print(f"wrote {escape(str(path))}", highlight=False)


def compare_command(runs: list[Path] = typer.Argument(..., help="Evaluated run folders (or folders of seeds)."),
                    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the table as Markdown here."),
                    per_label: bool = typer.Option(False, "--per-label", help="One row per label: each run's F1 "
                                                   "(mean over seeds); for two runs the difference and its share "
                                                   "of the level's macro-F1 difference, largest loss first."),
                    level: Optional[int] = typer.Option(None, "--level", help="With --per-label: only this level.")) -> None:
    """Compare runs side by side: F1 overall, per level and leaf, hierarchical, consistency, speed.

    Example: hmtc compare runs/goemotions-msml runs/goemotions-flat --per-label --level 3
    """
    from ..io import atomic_write_text
    from ..report import compare_table, markdown_table, per_label_table
    if level is not None and not per_label:
        raise typer.BadParameter("--level goes with --per-label")
    header, rows = per_label_table(runs, level) if per_label else compare_table(runs)
    table = Table(title="Runs compared (test split, after decoding)" + (", per label" if per_label else ""),
                  title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < (3 if per_label else 2) else "right")
    for r in rows:
        table.add_row(*(escape(f"{v:.4f}" if isinstance(v, float) else str(v)) for v in r))
    console = Console(emoji=False)
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    console.width = max(console.width, natural)          # never squeeze the figures to "0.…"
    console.print(table)
    if out is not None:
        atomic_write_text(out, markdown_table(header, rows) + "\n")
        err.print(f"wrote {escape(str(out))}", highlight=False)


def results_command(records_dir: Path = typer.Option(Path("experiments/records"), "--records",
                                                     help="Folder of run records (JSON)."),
                    out: Path = typer.Option(Path("experiments/RESULTS.md"), "--out", "-o",
                                             help="The Markdown file to regenerate."),
                    goals: Optional[Path] = typer.Option(None, "--goals", help="A goals file (TOML): goals to judge "
                                                         "the records against and published figures to set "
                                                         "beside them; none: tables only.")) -> None:
    """Regenerate RESULTS.md from the run records: tables per dataset, same-budget comparisons,
    learning curves, labelling loops; goals and published figures from --goals.

    Example: hmtc results --records experiments/records --out experiments/RESULTS.md --goals experiments/goals.toml
    """
    from ..results import write_results
    err.print(f"wrote {escape(str(write_results(records_dir, out, goals)))}", highlight=False)
