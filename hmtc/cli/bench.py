"""``hmtc bench``: the speed figures, each with its settings, as a table or JSON."""

from __future__ import annotations

import json
import platform
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table


def bench(models: str = typer.Option("flat,msml", "--models", help="Comma-separated model names."),
          precisions: str = typer.Option("fp32,bf16", "--precision", help="fp32 and/or bf16."),
          encoder: str = typer.Option("me5-small", "--encoder", help="Encoder name, folder or hub id."),
          steps: int = typer.Option(20, "--steps", help="Timed training steps per setting."),
          batch_size: int = typer.Option(32, "--batch-size"),
          infer_texts: int = typer.Option(1024, "--infer-texts", help="Texts timed for inference."),
          threads: int = typer.Option(0, "--threads", help="torch threads (0: all cores)."),
          skip_train: bool = typer.Option(False, "--skip-train"),
          skip_infer: bool = typer.Option(False, "--skip-infer"),
          metrics_samples: int = typer.Option(100_000, "--metrics-samples", help="0 skips the decode+metrics timing."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON."),
          out: Optional[str] = typer.Option(None, "--out", help="Also write the JSON here.")) -> None:
    """Training samples/s, inference texts/s and peak memory on DuEE-length texts; decode + metrics time."""
    from ..bench import decode_metrics_time, duee_texts, infer_throughput, train_throughput
    from ..io import atomic_write_json
    from ..record import command_line, git_commit, machine_info, now
    from ..taxonomy import Taxonomy
    from pathlib import Path

    taxonomy = Taxonomy.load(Path(__file__).resolve().parents[2] / "taxonomies" / "duee.tax")
    texts = duee_texts(max(infer_texts, batch_size * (steps + 3) * 3))
    rows = []
    for model in [m.strip() for m in models.split(",") if m.strip()]:
        for prec in [p.strip() for p in precisions.split(",") if p.strip()]:
            bf16 = prec == "bf16"
            settings = {"model": model, "encoder": encoder, "precision": prec, "threads": threads or "all"}
            if not skip_train:
                r = train_throughput(model, encoder, texts, taxonomy, bf16, batch_size, steps, threads=threads)
                rows.append({"figure": "train_samples_per_s", "value": r["samples_per_s"],
                             "settings": settings | {"batch_size": batch_size, "steps": steps,
                                                     "tokens_per_sample": r["tokens_per_sample"]},
                             "peak_rss_mib": r["peak_rss_mib"]})
            if not skip_infer:
                r = infer_throughput(model, encoder, texts[:infer_texts], taxonomy, bf16, threads=threads)
                rows.append({"figure": "infer_texts_per_s", "value": r["texts_per_s"],
                             "settings": settings | {"texts": r["texts"], "batch_size": 128},
                             "peak_rss_mib": r["peak_rss_mib"]})
    if metrics_samples:
        r = decode_metrics_time(metrics_samples)
        rows.append({"figure": "decode_plus_metrics_seconds", "value": r["total_seconds"],
                     "settings": {"samples": r["samples"], "nodes": r["nodes"], "decode": "best",
                                  "decode_seconds": r["decode_seconds"], "metrics_seconds": r["metrics_seconds"]}})
    report = {"command": command_line(), "git_commit": git_commit(), "date": now(),
              "machine": machine_info(), "python": platform.python_version(), "figures": rows}
    if out:
        atomic_write_json(out, report)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False))
        return
    t = Table(title="hmtc bench")
    for c in ("figure", "value", "settings", "peak RSS MiB"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["figure"], str(r["value"]), ", ".join(f"{k}={v}" for k, v in r["settings"].items()),
                  str(r.get("peak_rss_mib", "")))
    Console().print(t)
