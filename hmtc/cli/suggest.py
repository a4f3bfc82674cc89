"""``hmtc suggest``: the texts of a pool to label next (see :mod:`hmtc.suggest`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, emoji=False)


def suggest_command(run: Path = typer.Argument(..., help="Trained run folder (uses best/) or checkpoint folder."),
                    pool: Path = typer.Argument(..., help="Unlabelled texts: a .jsonl (text key) or a plain file, one a line."),
                    k: int = typer.Option(..., "-k", help="How many texts to queue."),
                    output: Path = typer.Option(..., "--output", "-o", help="The queue (JSONL, or a Label Studio "
                                                "task list with --format label-studio)."),
                    fmt: str = typer.Option("jsonl", "--format", help="jsonl or label-studio."),
                    label_config: Optional[Path] = typer.Option(None, "--label-config", help="Also write a Label "
                                                                "Studio labelling config (a Taxonomy tag) here."),
                    strategy: str = typer.Option("uncertain", "--strategy", help="uncertain (hierarchy-aware, "
                                                 "spread out) or random."),
                    seed: int = typer.Option(0, "--seed", help="The draw of --strategy random."),
                    weights: str = typer.Option("pool", "--weights", help="What makes a node rare, so it weighs "
                                                "more: pool (its predicted share of the pool) or labelled (how "
                                                "few of the run's training texts carry it)."),
                    text_key: str = typer.Option("text", "--text-key", help="JSON key of the text in a .jsonl pool."),
                    keep_fields: str = typer.Option("id", "--keep-fields", help="JSON fields copied from each pool "
                                                    "line to its queue entry (comma-separated)."),
                    engine: str = typer.Option("torch", "--engine", help="torch, onnx or onnx-int8 (after `hmtc export`)."),
                    ) -> None:
    """Rank a pool by how unsure the run is of each text (the deepest decision its answer rests on,
    rarer nodes first) and queue the top k, spread out so that no two are near-duplicates.

    Example: hmtc suggest runs/fewshot pool.jsonl -k 200 -o queue.json --format label-studio --label-config ls.xml
    """
    from ..checkpoint import locate
    from ..errors import HmtcError
    from ..io import atomic_write_text, check_output_file
    from ..loading import load_for_inference
    from ..predict import read_texts
    from ..suggest import label_studio_config, label_studio_task, suggest
    if fmt not in ("jsonl", "label-studio"):
        raise HmtcError(f"--format {fmt!r}: use jsonl or label-studio")
    check_output_file(output, pool, "--output", "pool")
    if label_config is not None:
        check_output_file(label_config, pool, "--label-config", "pool")
    _, ckpt_dir = locate(run)
    ckpt = load_for_inference(ckpt_dir, engine)
    items = list(read_texts(pool, text_key, [f for f in keep_fields.split(",") if f]))
    texts = [item["text"] for item in items]
    scores = None
    if engine == "torch":
        from ..inference import reads_store, score_texts
        if reads_store(ckpt.model):     # a pool suggested from round after round: its frozen states are read
            scores = score_texts(ckpt.model, texts)[0]
    picks = suggest(ckpt, texts, k, strategy, seed, scores=scores, weights=weights)
    if fmt == "jsonl":
        text = "".join(json.dumps({**items[p.line], "line": p.line + 1, "uncertainty": p.uncertainty, "node": p.node,
                                   "level": p.level, "prediction": p.labels}, ensure_ascii=False) + "\n"
                       for p in picks)
    else:
        version = ckpt.config.name
        text = json.dumps([label_studio_task(items[p.line], p, ckpt.index, version) for p in picks],
                          ensure_ascii=False, indent=1) + "\n"
    atomic_write_text(output, text)
    if label_config is not None:
        atomic_write_text(label_config, label_studio_config(ckpt.taxonomy))
    err.print(f"queued {len(picks)} of {len(items)} texts ({strategy}) -> {escape(str(output))}"
              + (f"; labelling config -> {escape(str(label_config))}" if label_config else ""))
