"""``hmtc bench``: the speed figures, each with its settings, as a table or JSON.

The library is imported inside each command (torch and transformers take seconds to load), so
`hmtc --help` and the other commands start at once.
"""

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
          freeze: str = typer.Option("0,8", "--freeze-layers",
                                     help="Training recipes: 0 = all layers train; N > 0 = lower N frozen and cached."),
          dropouts: str = typer.Option("torch,fast", "--dropout",
                                       help="Training dropout: torch's own and/or fast (model.fast_dropout)."),
          msml_options: str = typer.Option("", "--msml-options",
                                           help='MSML options as JSON, e.g. \'{"conv_dim": 128}\' (default: '
                                                "MSMLConfig's)."),
          engines: str = typer.Option("torch,onnx-int8", "--engines", help="Inference engines: torch, onnx, onnx-int8."),
          encoder: str = typer.Option("me5-small", "--encoder", help="Encoder name, folder or hub id."),
          infer_layers: str = typer.Option("0,6,4", "--infer-layers",
                                           help="Encoder depths timed for inference: 0 = all its layers, N = the lower N "
                                                "(a shallower student, see train.teacher)."),
          steps: int = typer.Option(12, "--steps", help="Timed training steps per setting and round."),
          rounds: int = typer.Option(3, "--rounds",
                                     help="Rounds over one recipe's settings, and over the --checkpoints, timed in turn "
                                          "(evens out the machine's drift)."),
          batch_size: int = typer.Option(32, "--batch-size"),
          epochs: int = typer.Option(6, "--epochs", help="Run length that a cache's one-off cost is spread over."),
          ema: float = typer.Option(0.998, "--ema", help="EMA decay updated each step, as in the DuEE recipe (0: off)."),
          dataset: str = typer.Option("duee", "--dataset", help="Dataset whose training texts and taxonomy are "
                                      "timed (a built-in name or a dataset .toml); DuEE without a data folder: "
                                      "stand-ins of its length profile."),
          train_texts: int = typer.Option(0, "--train-texts",
                                          help="Training texts whose length profile the timed steps follow (0: all)."),
          infer_texts: int = typer.Option(2048, "--infer-texts", help="Texts timed for inference."),
          checkpoints: str = typer.Option("", "--checkpoints",
                                          help="Comma-separated trained run or checkpoint folders also timed for "
                                               "inference with each engine (hmtc export them for ONNX)."),
          stream_texts: int = typer.Option(50_000, "--stream-texts",
                                           help="JSONL lines streamed through predict for the memory figure (0 skips)."),
          threads: int = typer.Option(0, "--threads", help="CPU threads: torch's, or ONNX batches run at once (0: all cores)."),
          skip_train: bool = typer.Option(False, "--skip-train"),
          skip_infer: bool = typer.Option(False, "--skip-infer"),
          metrics_samples: int = typer.Option(100_000, "--metrics-samples", help="0 skips the decode+metrics timing."),
          with_ceilings: bool = typer.Option(False, "--ceilings",
                                             help="Also measure this machine's matrix-product rates and the ceilings "
                                                  "they put on each training recipe and inference depth "
                                                  "(whether or not those are timed)."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON."),
          out: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON here.")) -> None:
    """Training samples/s, inference texts/s, streaming memory on a dataset's texts (DuEE's by
    default); decode + metrics time; with --ceilings, the most this machine's matrix products allow
    for each.

    Example: hmtc bench --dataset goemotions --skip-infer --json
    """
    from ..bench import (bench_inputs, ceilings, checkpoint_throughputs, decode_metrics_time, infer_throughput,
                         stream_predict_memory, train_throughputs)
    from ..runtime import ONNX_BATCH
    from ..io import atomic_write_json
    from ..record import command_line, git_commit, machine_info, now

    texts, taxonomy = bench_inputs(dataset, train_texts)
    if len(texts) < infer_texts:
        texts, _ = bench_inputs(dataset, infer_texts)
    infer = texts[:: max(1, len(texts) // infer_texts)][:infer_texts]     # spread over the set
    model_names, precs = _items(models), _items(precisions)
    by_engine = {"torch": precs, "onnx": ["fp32"], "onnx-int8": ["int8"]}     # precisions each engine runs
    if unknown := set(_items(engines)) - set(by_engine):
        raise typer.BadParameter(f"unknown engine(s) {', '.join(sorted(unknown))}; use torch, onnx, onnx-int8",
                                 param_hint="--engines")
    try:
        msml_opts = json.loads(msml_options) if msml_options else {}
    except json.JSONDecodeError as e:
        raise typer.BadParameter(f"not JSON: {e}", param_hint="--msml-options") from None
    if not isinstance(msml_opts, dict):
        raise typer.BadParameter("give a JSON object of MSMLConfig fields", param_hint="--msml-options")
    options = {"msml": msml_opts} if msml_opts else {}       # per model; flat keeps its defaults
    base = {"encoder": encoder, "threads": threads or "all"}
    rows: list[dict] = []
    if not skip_train:
        for prec in precs:
            for k in (int(x) for x in _items(freeze)):
                # every model × dropout of this recipe, timed in turn for `rounds` rounds: the
                # machine's drift then hits them alike and the ratios compare like with like
                grid = [(model, drop) for drop in _items(dropouts) for model in model_names]
                results = train_throughputs([{"model": m, "freeze_layers": k, "fast_dropout": d == "fast",
                                              "options": options.get(m)} for m, d in grid],
                                            texts, taxonomy, encoder, prec == "bf16", batch_size, steps, threads=threads,
                                            epochs=epochs, ema_decay=ema, rounds=rounds)
                by_setting = dict(zip(grid, results))
                for (model, drop), r in by_setting.items():
                    settings = base | {"model": model, "precision": prec, "freeze_layers": k,
                                       "cached": bool(k), "dropout": drop, "batch_size": batch_size,
                                       "steps": steps, "rounds": rounds, "ema": ema,
                                       "round_samples_per_s": r["round_samples_per_s"],
                                       "tokens_per_sample": r["tokens_per_sample"],
                                       "data_tokens_per_sample": r["data_tokens_per_sample"],
                                       "options": options.get(model, {})}
                    rows.append({"figure": "train_samples_per_s", "value": r["samples_per_s"], "settings": settings,
                                 "peak_rss_mib": r["peak_rss_mib"]})
                    if k:
                        rows.append({"figure": "train_samples_per_s_effective", "value": r["effective_samples_per_s"],
                                     "settings": settings | {"epochs": epochs, "cache_ms_per_sample": r["cache_ms_per_sample"]}})
                for drop in _items(dropouts) if {"flat", "msml"} <= set(model_names) else []:
                    flat, msml = by_setting[("flat", drop)], by_setting[("msml", drop)]
                    # training steps only: a cache's one-off cost is the same for both models
                    per_round = [f / m for f, m in zip(flat["round_samples_per_s"], msml["round_samples_per_s"])]
                    rows.append({"figure": "msml_over_flat_time_per_sample",
                                 "value": round(flat["samples_per_s"] / msml["samples_per_s"], 3),
                                 "settings": base | {"precision": prec, "freeze_layers": k, "cached": bool(k),
                                                     "dropout": drop, "rounds": rounds,
                                                     "msml_options": msml_opts,
                                                     "round_ratios": [round(x, 3) for x in per_round]}})
    if not skip_infer:
        for engine in _items(engines):
            for prec in by_engine[engine]:
                for layers in (int(x) for x in _items(infer_layers)):
                    for model in model_names:
                        r = infer_throughput(model, encoder, infer, taxonomy, prec == "bf16",
                                             threads=threads, engine=engine, layers=layers, options=options.get(model))
                        rows.append({"figure": "infer_texts_per_s", "value": r["texts_per_s"],
                                     "settings": base | {"model": model, "engine": engine, "precision": prec,
                                                         "encoder_layers": layers or "all",
                                                         "texts": r["texts"], "tokens_per_text": r["tokens_per_text"],
                                                         "batch_size": 128 if engine == "torch" else ONNX_BATCH,
                                                         "options": options.get(model, {})},
                                     "peak_rss_mib": r["peak_rss_mib"]})
        trained = [(target, engine) for target in _items(checkpoints) for engine in _items(engines)]
        for (target, engine), r in zip(trained, checkpoint_throughputs(trained, infer, threads, rounds)):
            rows.append({"figure": "infer_texts_per_s", "value": r["texts_per_s"],
                         "settings": {"checkpoint": target, "threads": base["threads"], "engine": engine,
                                      **{k: r[k] for k in ("model", "encoder_layers", "precision", "batch_size",
                                                           "texts", "tokens_per_text", "rounds",
                                                           "round_texts_per_s")}},
                         "peak_rss_mib": r["peak_rss_mib"]})
        if stream_texts:
            engine = _items(engines)[-1]
            model = model_names[-1]
            r = stream_predict_memory(model, encoder, infer, taxonomy, stream_texts, engine,
                                      threads=threads, bf16=engine == "torch" and "bf16" in precs,
                                      options=options.get(model))
            rows.append({"figure": "predict_stream_rss_growth_mib", "value": r["growth_mib"],
                         "settings": base | {"model": model, "engine": engine, "jsonl_lines": r["texts"],
                                             "chunk": r["chunk"], "texts_per_s": r["texts_per_s"],
                                             "rss_after_first_chunk_mib": r["rss_after_first_chunk_mib"],
                                             "rss_end_mib": r["rss_end_mib"]}})
    if with_ceilings:
        recipes = [{"model": m, "freeze_layers": int(k)} for k in _items(freeze) for m in model_names]
        infer_precs = list(dict.fromkeys(p for e in _items(engines) for p in by_engine[e]))
        rows += ceilings(recipes, [int(x) for x in _items(infer_layers)], model_names, texts, infer, taxonomy,
                         encoder, precs, infer_precs, batch_size, steps, epochs, threads=threads, options=options)
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
    for c in ("figure", "value", "settings", "peak RSS MiB (process)"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["figure"], str(r["value"]), ", ".join(f"{k}={v}" for k, v in r["settings"].items()),
                  str(r.get("peak_rss_mib", "")))
    Console(emoji=False).print(t)
