"""``hmtc train``, ``hmtc eval`` and ``hmtc predict``.

The library is imported inside each command (torch and transformers take seconds to load), so
`hmtc --help` and the other commands start at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

err = Console(stderr=True, emoji=False)


def train(config: Path = typer.Argument(..., help="Run config (TOML); see experiments/."),
          set_: Optional[list[str]] = typer.Option(None, "--set", "-s",
                                                   help="Override a key: section.key=value (TOML value), or name=... Repeatable."),
          seeds: Optional[str] = typer.Option(None, "--seeds", help="Train and evaluate once per seed (e.g. 42,43,44) "
                                              "into <out>/seed-<n>/, then write the mean ± std record."),
          out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: <train.output_dir>/<name>)."),
          resume: bool = typer.Option(False, "--resume", help="Continue the run (or the seeds) from the last checkpoint."),
          init: Optional[Path] = typer.Option(None, "--init", help="Start from this run's weights (train.init_from), "
                                              "e.g. one hmtc migrate carried onto data.taxonomy."),
          accept_changes: bool = typer.Option(False, "--accept-changes", help="With --resume: continue although the "
                                              "config differs from the run's (run.json and the record keep the changes)."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace this run's existing record."),
          stop_after: Optional[int] = typer.Option(None, "--stop-after", help="Stop after N epochs of this process (resume later)."),
          no_eval: bool = typer.Option(False, "--no-eval", help="Skip the evaluation after training."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.")) -> None:
    """Train a model from a config, then evaluate it (metrics.json + a record).

    Example: hmtc train experiments/duee-msml.toml --seeds 42,43,44 --set train.epochs=3
    Fine-tune a migrated run: hmtc train my.toml --init runs/v2 --set data.taxonomy=v2.tax
    """
    from ..config import load_config
    from ..errors import ConfigError
    from ..evaluate import evaluate_run
    from ..home import run_folder
    from ..record import check_record_free, record_path
    from ..seeds import parse_seeds, train_seeds
    from ..train import Trainer
    cfg = load_config(config, [*(set_ or []), *([f"train.init_from={json.dumps(str(init))}"] if init else [])])
    seed_list = parse_seeds(seeds) if seeds is not None else parse_seeds(cfg.train.seeds)
    if seeds is not None and not seed_list:
        raise ConfigError(f"--seeds {seeds!r} names no seed; give one or more, e.g. --seeds 42,43,44")
    if seed_list:
        agg = train_seeds(cfg, seed_list, out, resume=resume, overwrite=overwrite, stop_after_epochs=stop_after,
                          no_eval=no_eval, console=err, quiet=quiet, accept_changes=accept_changes)
        if agg is not None:
            _show_seeds(agg)
        return
    run_dir = run_folder(cfg, out)
    if not no_eval:
        check_record_free(record_path(cfg, run_dir), overwrite)
    if cfg.train.baseline and not no_eval:
        from ..baseline import baseline_config
        baseline_config(cfg)                 # a bad baseline file fails now, not after training
    trainer = Trainer(cfg, run_dir, resume=resume, stop_after_epochs=stop_after, console=err, quiet=quiet,
                      accept_changes=accept_changes)
    trainer.fit()
    if not trainer.dist_.is_main:
        return                           # other ranks of a torchrun job: rank 0 evaluates
    if no_eval or trainer.state_.epoch < cfg.train.epochs:
        err.print(f"run folder: {escape(str(run_dir))}")
        return
    metrics = evaluate_run(run_dir, err, quiet, overwrite=overwrite)
    _show(metrics)
    if cfg.train.baseline:
        from ..baseline import fit_baseline
        err.print(f"fitting the baseline {escape(cfg.train.baseline)} on the same split ...")
        _show_baseline(metrics, fit_baseline(cfg, run_dir, err, quiet), trainer.state_.train_seconds)


def eval_(target: Path = typer.Argument(..., help="Run folder (uses best/) or checkpoint folder."),
          as_json: bool = typer.Option(False, "--json", help="Print every figure as JSON."),
          engine: str = typer.Option("torch", "--engine", help="torch, onnx or onnx-int8 (after `hmtc export`)."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run's existing record."),
          set_: Optional[list[str]] = typer.Option(None, "--set", "-s",
                                                   help="Decode differently: decode.key=value (TOML value). Repeatable."),
          tag: Optional[str] = typer.Option(None, "--tag", help="File this evaluation as metrics.<tag>.json and record "
                                            "<run>.<tag>.json beside the run's own."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.")) -> None:
    """Evaluate: tune thresholds on dev, decode test consistently, write metrics.json.

    A folder of seeds (from --seeds) evaluates every seed and writes the mean record.
    Example: hmtc eval runs/duee-msml-fast8 --set decode.complete=true --tag complete
    """
    from ..config import parse_overrides
    from ..evaluate import evaluate_run
    from ..record import command_line
    from ..seeds import evaluate_seeds, seed_folders
    overrides = parse_overrides(set_ or [], only="decode").get("decode", {})
    if seed_folders(target):
        _show_seeds(evaluate_seeds(target, err, quiet, engine=engine, overwrite=overwrite,
                                   decode_overrides=overrides, tag=tag))
        return
    metrics = evaluate_run(target, err, quiet, command=command_line(), engine=engine, overwrite=overwrite,
                           decode_overrides=overrides, tag=tag)
    if as_json:
        typer.echo(json.dumps(metrics, ensure_ascii=False))
    else:
        _show(metrics)


def predict(ckpt: Path = typer.Argument(..., help="Run folder (uses best/) or checkpoint folder."),
            texts: Optional[list[str]] = typer.Argument(None, help="Texts to classify (else --input or stdin)."),
            input_: Optional[Path] = typer.Option(None, "--input", "-i", help="A .jsonl (text key) or plain file, one text per line."),
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write JSONL here (default: stdout)."),
            text_key: str = typer.Option("text", "--text-key", help="JSON key of the text in --input .jsonl."),
            keep_fields: str = typer.Option("id", "--keep-fields", help="JSON fields copied from each input line to "
                                            "its result (comma-separated)."),
            chunk: int = typer.Option(2048, "--chunk", help="Texts held in memory at once."),
            bf16: Optional[bool] = typer.Option(None, "--bf16/--fp32", help="bf16 autocast (default: as trained)."),
            engine: str = typer.Option("torch", "--engine", help="torch, onnx or onnx-int8 (after `hmtc export`)."),
            top_k: int = typer.Option(0, "--top-k", min=0, help="Also the K most probable nodes of each level."),
            all_scores: bool = typer.Option(False, "--all-scores", help="Also every node's probability."),
            leaf: bool = typer.Option(False, "--leaf", help="Complete every prediction down to a leaf (the best "
                                      "child at each step)."),
            back_off: Optional[bool] = typer.Option(None, "--back-off/--no-back-off", help="Drop predicted nodes "
                                                    "not above their threshold (guesses), so answers stop at their "
                                                    "deepest sure node (default: the run's decode.back_off)."),
            threads: int = typer.Option(0, "--threads", help="CPU threads (0: all cores)."),
            quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (shown for --input).")) -> None:
    """Predict consistent label paths with scores; JSONL out, one line per input line (a blank one
    gets an empty result saying so).

    Example: hmtc predict runs/duee-msml-default --input texts.jsonl --output predictions.jsonl
    """
    from ..checkpoint import locate
    from ..io import check_output_file
    from ..predict import count_lines, decoded_lines, predict_texts, read_texts
    from ..progress import progress_bar
    if output is not None:
        check_output_file(output, input_)
    _, ckpt_dir = locate(ckpt)
    model = _load_for_predict(ckpt_dir, engine, threads)
    total = None
    if texts:
        source = iter(texts)
    elif input_ is not None:
        source = read_texts(input_, text_key, [f for f in keep_fields.split(",") if f])
        total = None if quiet else count_lines(input_)
    else:
        source = (line for _, line in decoded_lines(sys.stdin.buffer, "<stdin>"))
    results = predict_texts(model, source, chunk=chunk, bf16=bf16, top_k=top_k, all_scores=all_scores, leaf=leaf,
                            back_off=back_off)
    with progress_bar(err, disable=total is None) as bar:
        task = bar.add_task("predicting", total=total, info="")
        lines = (json.dumps(r, ensure_ascii=False) for r in results)
        if output is None:
            for line in lines:
                typer.echo(line)
                bar.advance(task)
            return
        tmp = output.with_name(f".{output.name}.partial")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:   # streamed aside, renamed when complete
                for line in lines:
                    fh.write(line + "\n")
                    bar.advance(task)
            tmp.replace(output)
        finally:
            tmp.unlink(missing_ok=True)                  # a failed run leaves no partial file
    err.print(f"wrote {escape(str(output))}")


def _load_for_predict(ckpt_dir: Path, engine: str, threads: int):
    """The checkpoint scored by ``engine``; an exported graph without windows through
    :mod:`hmtc.runtime`, so that predict imports neither torch nor transformers (cold start)."""
    import os

    from ..checkpoint import read_config
    if engine in ("onnx", "onnx-int8") and not read_config(ckpt_dir).model.windows:
        from ..runtime import load_onnx
        return load_onnx(ckpt_dir, engine, threads)
    import torch

    from ..loading import load_for_inference
    torch.set_num_threads(threads or os.cpu_count() or 1)
    return load_for_inference(ckpt_dir, engine, threads)


def _show(metrics: dict) -> None:
    from ..record import evaluated
    test = evaluated(metrics)
    t = Table(title=f"{metrics['split']} (decoding: {metrics['decode']['method']}, threshold {metrics['decode']['threshold']})")
    for col in ("figure", "value", "before decoding"):
        t.add_column(col, justify="right" if col != "figure" else "left")
    for k, v in metrics["before_decoding"].items():
        t.add_row(k, f"{test[k]:.4f}", f"{v:.4f}")
    for lv in test["per_level"]:
        t.add_row(f"level {lv['level']} micro / macro F1", f"{lv['micro_f1']:.4f} / {lv['macro_f1']:.4f}", "")
    Console(emoji=False).print(t)
    if "record" in metrics:
        err.print(f"recorded: {escape(metrics['record'])}")


def ensemble(members: list[Path] = typer.Argument(..., help="Trained run, checkpoint or seeds folders (2 or more)."),
             out: Path = typer.Option(..., "--out", "-o", help="The ensemble's run folder (a seeds folder when the "
                                      "members are seeds folders: one ensemble per shared seed)."),
             weights: Optional[str] = typer.Option(None, "--weights", help="One weight per member, comma-separated "
                                                   "(default: equal), or 'tune': a weighted sum tuned on the "
                                                   "members' dev split.")) -> None:
    """Combine the logits of trained models of one taxonomy (their mean, or with --weights tune a
    sum weighted on dev); evaluate it with hmtc eval, distil it with train.teacher. Members on other
    scales (tfidf beside a neural model) want --weights tune.

    Example: hmtc ensemble runs/duee-msml-fast8 runs/duee-flat-fast8 runs/duee-global-fast8 -o runs/duee-ens

    Example: hmtc ensemble runs/20ng-msml-long runs/20ng-tfidf-seeds --weights tune -o runs/20ng-msml-tfidf
    """
    from ..ensemble import build_ensemble, parse_weights
    for folder, tuned in build_ensemble(members, out, parse_weights(weights), err):
        err.print(f"wrote {escape(str(folder / 'best'))}: {len(members)} members")
        if tuned:
            err.print(f"  weights {', '.join(f'{x:.4g}' for x in tuned['weights'])} (a sum) tuned on "
                      f"{tuned['texts']} dev texts: micro-F1 {tuned['micro_f1']:.4f}, members alone "
                      f"{', '.join(f'{x:.4f}' for x in tuned['members_micro_f1'])}")


def _show_baseline(metrics: dict, base: dict, seconds: float | None) -> None:
    """This run beside the baseline fitted on its split, and where it stands."""
    from ..record import evaluated
    t = Table(title=f"{metrics['split']}: this run beside the baseline ({escape(base['model'])}, same split and seed)")
    for col in ("figure", "this run", "baseline", "difference"):
        t.add_column(col, justify="right" if col != "figure" else "left")
    for k in ("leaf_micro_f1", "leaf_macro_f1", "micro_f1", "macro_f1"):
        ours, theirs = evaluated(metrics)[k], evaluated(base)[k]
        t.add_row(k, f"{ours:.4f}", f"{theirs:.4f}", f"{100 * (ours - theirs):+.2f} points")
    t.add_row("training seconds", "–" if seconds is None else f"{seconds:.0f}", f"{base['train_seconds']:.0f}", "")
    Console(emoji=False).print(t)
    ahead = [k for k in ("leaf_micro_f1", "leaf_macro_f1") if evaluated(metrics)[k] > evaluated(base)[k]]
    verdict = ("above the baseline at leaf micro- and macro-F1" if len(ahead) == 2 else
               "below the baseline at leaf micro- and macro-F1" if not ahead else f"above the baseline only at {ahead[0]}")
    err.print(f"this run is {verdict} (one seed; experiments/RESULTS.md has seed-averaged comparisons)")


def _show_seeds(agg: dict) -> None:
    m, s = agg["metrics"], agg["metrics_std"]
    t = Table(title=f"{escape(agg['name'])}: mean ± std over seeds {', '.join(map(str, agg['seeds']))} "
              f"({agg.get('split', 'test')}, after decoding)")
    for col in ("figure", "mean ± std (n)", "per seed"):
        t.add_column(col, justify="right" if col != "figure" else "left")
    for k in ("micro_f1", "macro_f1", "leaf_micro_f1", "leaf_macro_f1", "hier_f1", "exact_match"):
        if k in m:
            t.add_row(k, f"{m[k]:.4f} ± {s[k]:.4f} ({agg['n']})", " ".join(f"{v:.4f}" for v in agg["per_seed"][k]))
    Console(emoji=False).print(t)
    if "record" in agg:
        err.print(f"recorded: {escape(agg['record'])}")


def export(target: Path = typer.Argument(..., help="Run folder (uses best/) or checkpoint folder."),
           format_: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
           int8: bool = typer.Option(True, "--int8/--no-int8", help="Also write the int8-quantised graph.")) -> None:
    """Export a checkpoint for fast CPU inference: model.onnx (+ model.int8.onnx) in the checkpoint."""
    from ..errors import HmtcError
    from ..checkpoint import locate
    from ..export import export_onnx
    if format_ != "onnx":
        raise HmtcError(f"unknown export format {format_!r}; use onnx")
    _, ckpt_dir = locate(target)
    for path in export_onnx(ckpt_dir, int8=int8):
        err.print(f"wrote {escape(str(path))} ({path.stat().st_size / 2**20:.1f} MiB)")
