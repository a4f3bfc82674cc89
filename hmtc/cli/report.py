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
    cells = [[escape(f"{v:.4f}" if isinstance(v, float) else str(v)) for v in r] for r in rows]
    _print_in_blocks("Runs compared (after decoding" + (", per label)" if per_label else "; each on the split named)"),
                     header, cells, left=3 if per_label else 4, keys=2 if per_label else 1)
    if not per_label and len({(r[2], r[3]) for r in rows}) > 1:
        err.print("note: these runs are scored on different datasets or splits (" + escape(
                  ", ".join(sorted({f"{r[2]} {r[3]}" for r in rows}))) + "): their figures do not compare",
                  soft_wrap=True, highlight=False)
    if out is not None:
        atomic_write_text(out, markdown_table(header, rows) + "\n")
        err.print(f"wrote {escape(str(out))}", highlight=False)


def _print_in_blocks(title: str, header: list[str], cells: list[list[str]], left: int, keys: int) -> None:
    """Print the table in column blocks that each fit the terminal, every block repeating the
    first ``keys`` columns (the row's name), as pandas prints a wide frame: a compare table is
    some 200 columns wide, and squeezing its cells would cut the figures to "0.…". The first
    ``left`` columns are text, the rest figures."""
    console = Console(emoji=False)

    def table(cols: list[int], first: bool) -> Table:
        t = Table(title=title if first else None, title_justify="left")
        for i in cols:
            t.add_column(header[i], justify="left" if i < left else "right", no_wrap=i >= left)
        for row in cells:
            t.add_row(*(row[i] for i in cols))
        return t

    def width(t: Table) -> int:
        return Measurement.get(console, console.options.update_width(10_000), t).maximum

    blocks, block = [], list(range(keys))
    for i in range(keys, len(header)):
        if len(block) > keys and width(table(block + [i], not blocks)) > console.width:
            blocks.append(block)
            block = list(range(keys))
        block.append(i)
    fits = console.width
    for n, cols in enumerate([*blocks, block]):
        t = table(cols, n == 0)
        console.width = max(fits, width(t))         # a block too wide alone is widened, never squeezed
        console.print(t)


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
