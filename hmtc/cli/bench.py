"""``hmtc bench``: the speed figures, each with its settings, as a table or JSON."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table


def _items(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def bench(models: str = typer.Option("flat,msml", "--models", help="Comma-separated model names."),
          precisions: str = typer.Option("bf16", "--precision", help="Training/torch-inference precisions: fp32 and/or bf16."),
          freeze: str = typer.Option("0,4,6", "--freeze-layers",
                                     help="Training recipes: 0 = all layers train; N > 0 = lower N frozen and cached."),
          dropouts: str = typer.Option("torch,fast", "--dropout",
                                       help="Training dropout: torch's own and/or fast (model.fast_dropout)."),
          engines: str = typer.Option("torch,onnx-int8", "--engines", help="Inference engines: torch, onnx, onnx-int8."),
          encoder: str = typer.Option("me5-small", "--encoder", help="Encoder name, folder or hub id."),
          steps: int = typer.Option(20, "--steps", help="Timed training steps per setting."),
          batch_size: int = typer.Option(32, "--batch-size"),
          epochs: int = typer.Option(6, "--epochs", help="Run length that a cache's one-off cost is spread over."),
          ema: float = typer.Option(0.998, "--ema", help="EMA decay updated each step, as in the DuEE recipe (0: off)."),
          train_texts: int = typer.Option(0, "--train-texts",
                                          help="Training texts whose length profile the timed steps follow (0: all)."),
          infer_texts: int = typer.Option(2048, "--infer-texts", help="Texts timed for inference."),
          stream_texts: int = typer.Option(50_000, "--stream-texts",
                                           help="JSONL lines streamed through predict for the memory figure (0 skips)."),
          threads: int = typer.Option(0, "--threads", help="torch threads (0: all cores)."),
          skip_train: bool = typer.Option(False, "--skip-train"),
          skip_infer: bool = typer.Option(False, "--skip-infer"),
          metrics_samples: int = typer.Option(100_000, "--metrics-samples", help="0 skips the decode+metrics timing."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON."),
          out: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON here.")) -> None:
    """Training samples/s, inference texts/s, streaming memory on DuEE-length texts; decode + metrics time."""
    from ..bench import (decode_metrics_time, duee_texts, infer_throughput, stream_predict_memory,
                         train_throughput)
    from ..export import ONNX_BATCH
    from ..io import atomic_write_json
    from ..record import command_line, git_commit, machine_info, now
    from ..taxonomy import Taxonomy

    taxonomy = Taxonomy.load(Path(__file__).resolve().parents[2] / "taxonomies" / "duee.tax")
    texts = duee_texts(train_texts)
    if len(texts) < infer_texts:
        texts = duee_texts(infer_texts)
    infer = texts[:: max(1, len(texts) // infer_texts)][:infer_texts]     # spread over the set
    model_names, precs = _items(models), _items(precisions)
    base = {"encoder": encoder, "threads": threads or "all"}
    rows: list[dict] = []
    train_rate: dict[tuple, float] = {}
    if not skip_train:
        for prec in precs:
            for k, drop in ((int(x), d) for x in _items(freeze) for d in _items(dropouts)):
                for model in model_names:
                    r = train_throughput(model, encoder, texts, taxonomy, prec == "bf16", batch_size, steps,
                                         threads=threads, freeze_layers=k, epochs=epochs, ema_decay=ema,
                                         fast_dropout=drop == "fast")
                    settings = base | {"model": model, "precision": prec, "freeze_layers": k,
                                       "cached": bool(k), "dropout": drop, "batch_size": batch_size,
                                       "steps": steps, "ema": ema,
                                       "tokens_per_sample": r["tokens_per_sample"],
                                       "data_tokens_per_sample": r["data_tokens_per_sample"]}
                    rows.append({"figure": "train_samples_per_s", "value": r["samples_per_s"], "settings": settings,
                                 "peak_rss_mib": r["peak_rss_mib"]})
                    rate = r["samples_per_s"]
                    if k:
                        rate = r["effective_samples_per_s"]
                        rows.append({"figure": "train_samples_per_s_effective", "value": rate,
                                     "settings": settings | {"epochs": epochs, "cache_ms_per_sample": r["cache_ms_per_sample"]}})
                    train_rate[(model, prec, k, drop)] = rate
                if "msml" in model_names and "flat" in model_names:
                    ratio = train_rate[("flat", prec, k, drop)] / train_rate[("msml", prec, k, drop)]
                    rows.append({"figure": "msml_over_flat_time_per_sample", "value": round(ratio, 3),
                                 "settings": base | {"precision": prec, "freeze_layers": k, "cached": bool(k),
                                                     "dropout": drop}})
    if not skip_infer:
        for engine in _items(engines):
            for prec in (precs if engine == "torch" else ["fp32" if engine == "onnx" else "int8"]):
                for model in model_names:
                    r = infer_throughput(model, encoder, infer, taxonomy, prec == "bf16",
                                         threads=threads, engine=engine)
                    rows.append({"figure": "infer_texts_per_s", "value": r["texts_per_s"],
                                 "settings": base | {"model": model, "engine": engine, "precision": prec,
                                                     "texts": r["texts"], "tokens_per_text": r["tokens_per_text"],
                                                     "batch_size": 128 if engine == "torch" else ONNX_BATCH},
                                 "peak_rss_mib": r["peak_rss_mib"]})
        if stream_texts:
            engine = _items(engines)[-1]
            model = model_names[-1]
            r = stream_predict_memory(model, encoder, infer, taxonomy, stream_texts, engine,
                                      threads=threads, bf16=engine == "torch" and "bf16" in precs)
            rows.append({"figure": "predict_stream_rss_growth_mib", "value": r["growth_mib"],
                         "settings": base | {"model": model, "engine": engine, "jsonl_lines": r["texts"],
                                             "chunk": r["chunk"], "texts_per_s": r["texts_per_s"],
                                             "rss_after_first_chunk_mib": r["rss_after_first_chunk_mib"],
                                             "rss_end_mib": r["rss_end_mib"]}})
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
