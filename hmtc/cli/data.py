"""``hmtc data``: look at a dataset before training on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..data.builders import taxonomy_from_dataset
from ..data.catalog import load_dataset
from ..data.stats import dataset_stats
from ..taxonomy import Taxonomy

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def _group() -> None:
    """Datasets: built-ins (duee, goemotions, 20newsgroups) or a dataset .toml file."""
    # A callback keeps ``stats`` a subcommand even while it is the only one.


def _taxonomy(dataset, data_dir: Optional[Path], on_error: str) -> tuple[Optional[Taxonomy], str]:
    """The dataset's .tax file, else one derived on the fly, else none."""
    if dataset.taxonomy_path.is_file():
        return Taxonomy.load(dataset.taxonomy_path), str(dataset.taxonomy_path)
    if dataset.spec.taxonomy_from:
        return (taxonomy_from_dataset(dataset.spec.toml or dataset.name, data_dir, on_error),
                f"derived ({dataset.taxonomy_path} not found)")
    return None, f"none ({dataset.taxonomy_path} not found)"


@app.command()
def stats(
    dataset: str = typer.Argument(..., help="duee, goemotions, 20newsgroups or a dataset .toml"),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Folder holding the datasets (default: $HMTC_DATA)."),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
    skip_errors: bool = typer.Option(False, "--skip-errors",
                                     help="Skip and count bad lines and unknown labels."),
) -> None:
    """Sizes per split, labels per sample and per taxonomy level, text lengths, long tail."""
    on_error = "skip" if skip_errors else "raise"
    ds = load_dataset(dataset, data_dir, on_error=on_error)
    tax, tax_note = _taxonomy(ds, data_dir, on_error)
    st = dataset_stats(ds, tax, on_error=on_error)
    st["taxonomy_source"] = tax_note
    if as_json:
        typer.echo(json.dumps(st, ensure_ascii=False, indent=2))
        return
    _print(st)


def _print(st: dict) -> None:
    con = Console(highlight=False, emoji=False)
    splits = st["splits"]
    names = list(splits)
    con.print(f"[bold]{escape(str(st['name']))}[/]  taxonomy: {escape(str(st['taxonomy_source']))}")

    t = Table(title="Sizes")
    t.add_column("")
    for n in names:
        t.add_column(n, justify="right")
    rows = {"samples": lambda s: f"{s['samples']:,}",
            "skipped": lambda s: str(s["skipped"]),
            "label instances": lambda s: f"{s['label_instances']:,}",
            "distinct labels": lambda s: str(s["distinct_labels"]),
            "duplicate texts": lambda s: str(s["duplicate_texts"]),
            "texts also in train": lambda s: str(s.get("texts_also_in_train", "-")),
            "chars mean / median": lambda s: "{mean:.1f} / {median:g}".format(**s["text_chars"]),
            "chars p95 / max": lambda s: "{p95:.0f} / {max:,}".format(**s["text_chars"])}
    for label, cell in rows.items():
        t.add_row(label, *(cell(splits[n]) for n in names))
    con.print(t)
    for n, s in splits.items():
        if s["skipped_reasons"]:
            reasons = ", ".join(f"{k} {v}" for k, v in s["skipped_reasons"].items())
            con.print(f"skipped in {n}: {escape(reasons)}")

    if st["taxonomy"]:
        t = Table(title="Taxonomy levels: nodes present / label instances (after closure)")
        t.add_column("level")
        t.add_column("nodes", justify="right")
        for n in names:
            t.add_column(n, justify="right")
        for k, nodes in enumerate(st["taxonomy"]["per_level"]):
            t.add_row(str(k + 1), str(nodes), *("{present} / {instances:,}".format(
                **splits[n]["levels"][k]) for n in names))
        t.add_row("> 1 level-1 node", "",
                  *(f"{splits[n]['multi_branch_samples']:,}" for n in names))
        con.print(t)

    t = Table(title="Labels per sample (raw)")
    t.add_column("labels")
    for n in names:
        t.add_column(n, justify="right")
    ks = sorted({k for s in splits.values() for k in s["labels_per_sample"]})
    for k in ks:
        t.add_row(str(k), *(f"{splits[n]['labels_per_sample'].get(k, 0):,}" for n in names))
    con.print(t)

    lt = st["long_tail"]
    if lt and lt["labels"]:
        t = Table(title=f"Long tail ({'leaves' if st['taxonomy'] else 'labels'}, "
                        f"{lt['split']} split)")
        t.add_column("measure")
        t.add_column("value", justify="right")
        for key, label in (("labels", "labels"), ("min", "min samples"),
                           ("median", "median samples"), ("max", "max samples"),
                           ("under_10", "labels with < 10"), ("under_50", "labels with < 50"),
                           ("top10pct_share", "samples covered by top 10% labels"),
                           ("gini", "Gini")):
            t.add_row(label, f"{lt[key]:g}")
        con.print(t)
