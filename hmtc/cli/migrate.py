"""``hmtc migrate``: carry a trained run onto an edited taxonomy (see :mod:`hmtc.migrate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, emoji=False)


def migrate_command(run: Path = typer.Argument(..., help="Trained run folder (uses best/) or checkpoint folder."),
                    taxonomy: Path = typer.Argument(..., help="The edited taxonomy (.tax)."),
                    out: Path = typer.Option(..., "--out", "-o", help="The migrated run folder (must not exist)."),
                    map_: Optional[list[str]] = typer.Option(None, "--map", help="OLD=NEW: old node OLD's rows go to "
                                                             "NEW (a renamed id; several OLDs onto one NEW merge "
                                                             "them, weighted by training texts). Repeatable."),
                    examples: Optional[Path] = typer.Option(None, "--examples", help="JSONL of labelled texts "
                                                            "({\"text\": ..., \"labels\": [...]}, ids of the new "
                                                            "taxonomy): new nodes start from the mean of their "
                                                            "examples instead of their names."),
                    ) -> None:
    """Carry a trained run onto an edited taxonomy: kept, moved and renamed nodes keep their rows
    and thresholds, merged nodes mix theirs, a split node's children start from it and their
    names, new nodes from their examples (--examples) or names. Prints one line per changed node; the new run predicts at
    once, and `hmtc train CONFIG --init OUT --set data.taxonomy=NEW.tax` fine-tunes it.

    Example: hmtc migrate runs/duee-msml-default v2.tax --map 竞赛行为-夺冠=竞赛行为-冠军 -o runs/duee-v2
    """
    from ..checkpoint import locate
    from ..data.catalog import encode_labels
    from ..data.readers import read_jsonl
    from ..io import run_locked
    from ..loading import load_checkpoint
    from ..migrate import check_new_folder, migrate, parse_map, write_migrated
    from ..taxonomy import Taxonomy
    mapping = parse_map(map_ or [])
    new = Taxonomy.load(taxonomy)
    pairs = None
    if examples is not None:             # checked against the new taxonomy before anything loads
        read = read_jsonl(examples)
        y = encode_labels(read, new)
        ids = new.compile().ids
        pairs = (list(read.texts), [[ids[j] for j in row.nonzero()[0]] for row in y])
    check_new_folder(out)                # before the weights load, which takes seconds
    run_dir, ckpt_dir = locate(run)
    with run_locked(run_dir, shared=True):       # read while no other process writes the run
        ckpt = load_checkpoint(ckpt_dir)
        migration = migrate(ckpt, new, mapping, examples=pairs)
    for line in migration.changes:
        err.print(escape(line), highlight=False)
    if not migration.changes:
        err.print("no node changed")
    write_migrated(migration, ckpt, out)
    kinds = [k for k in migration.kinds.values()]
    err.print(f"migrated run: {escape(str(out))} ({len(kinds)} nodes: " + ", ".join(
        f"{kinds.count(k)} {k}" for k in ("kept", "moved", "renamed", "merged", "split", "new") if kinds.count(k)) + ")")
