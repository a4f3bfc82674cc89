"""Evaluate a run or checkpoint: tune thresholds on dev, decode test consistently, report
consistency before and after decoding, and record the run."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from .calibration import CONSISTENT, calibrated, consistent, ece, fit_temperatures, reliability, violations
from .checkpoint import locate
from .config import RunConfig, check_config
from .data.catalog import dataset_protocol
from .data.prepare import prepare, taxonomy_for
from .decode import WEIGHT_STEPS, stops_early, tune_weights, tuned_micro_f1
from .errors import HmtcError
from .inference import pick_device, reads_store, score_texts, to_device
from .io import atomic_write_bytes, atomic_write_json, run_locked
from .loading import load_checkpoint, load_for_inference
from .metrics import evaluate
from .progress import progress_bar
from .record import check_record_free, evaluated, git_commit, machine_info, now, record_path, run_key, write_record

SUMMARY_KEYS = ("micro_f1", "macro_f1", "leaf_micro_f1", "leaf_macro_f1", "hier_f1", "c_micro_f1",
                "c_macro_f1", "exact_match", "samples_f1", "inconsistent_samples", "orphan_nodes")


def evaluate_run(target: str | Path, console: Console | None = None, quiet: bool = False,
                 command: str | None = None, engine: str = "torch", overwrite: bool = False,
                 decode_overrides: dict | None = None, tag: str | None = None) -> dict:
    """Evaluate; writes ``metrics.json`` and ``test_scores.npz`` in the run folder, ``decode.json``
    in the checkpoint, and the run record under the config's ``record_dir``.

    Another ``engine`` (``onnx``, ``onnx-int8``: :mod:`hmtc.export`) scores the same texts with
    the exported graph and writes ``metrics.<engine>.json`` and the record ``<name>.<engine>.json``,
    leaving the torch results and ``decode.json`` alone. The record is keyed by the run folder
    (:func:`hmtc.record.run_key`); an existing record is replaced only with ``overwrite``, and
    that is checked before any scoring.

    ``decode_overrides`` replaces keys of the run's ``[decode]`` table for this evaluation (checked
    as any config: :meth:`hmtc.config.RunConfig.merged`), and
    ``tag`` files it beside the run's own (``metrics.<tag>.json``, record ``<key>.<tag>.json``),
    so another decoding of the same trained model is measured without retraining.

    A run folder is locked meanwhile (:class:`hmtc.io.RunLock`): it is not evaluated while
    another process trains or evaluates it.
    """
    check_config({"decode": decode_overrides or {}})          # before anything is loaded
    run_dir, _ = locate(target)
    with run_locked(run_dir):
        return _evaluate_run(target, console, quiet, command, engine, overwrite, decode_overrides, tag)


def _evaluate_run(target: str | Path, console: Console | None = None, quiet: bool = False,
                  command: str | None = None, engine: str = "torch", overwrite: bool = False,
                  decode_overrides: dict | None = None, tag: str | None = None) -> dict:
    """The body of :func:`evaluate_run`, under its lock."""
    console = console or Console(stderr=True, emoji=False)
    run_dir, ckpt_dir = locate(target)
    ckpt = load_for_inference(ckpt_dir, engine)
    cfg = ckpt.config
    if decode_overrides:
        cfg = cfg.merged({"decode": decode_overrides})
    if tag is not None and (not tag or not tag.replace("-", "").replace("_", "").isalnum()):
        raise HmtcError(f"tag {tag!r} must be letters, digits, '-' or '_'")
    suffix = ("" if engine == "torch" else f".{engine}") + (f".{tag}" if tag else "")
    check_record_free(record_path(cfg, run_dir, suffix), overwrite)
    torch.set_num_threads(cfg.train.threads or os.cpu_count() or 1)
    device = pick_device(cfg.train.device)
    if ckpt.model is not None:
        to_device(ckpt.model, device)
    check_same_taxonomy(ckpt, cfg)
    data = prepare(cfg, ckpt.taxonomy, splits_wanted=["dev", "test"])
    eval_split = "test" if "test" in data.labels else "dev"
    t0 = time.time()
    # the frozen part's states of a run that stores them (or of such members) are read, not computed again
    store = engine == "torch" and reads_store(ckpt.model)
    scores, stored = {}, 0
    with progress_bar(console, quiet) as progress:
        for s in dict.fromkeys(("dev", eval_split)):
            if store:
                scores[s], n = score_texts(ckpt.model, data.texts[s], progress)
                stored += n
            else:
                scores[s] = ckpt.scores(data.texts[s], progress=progress)
    infer_seconds = time.time() - t0
    n_infer = sum(len(data.texts[s]) for s in {"dev", eval_split})
    index = data.index
    no_dev = not len(data.labels["dev"])        # a few-shot protocol without dev texts: nothing is tuned
    if no_dev:
        scores["dev"] = np.zeros((0, index.n_nodes), dtype=np.float32)
    dec = data.decoding.tune(cfg.decode, scores["dev"], data.labels["dev"], index, fit_temperatures)
    gold = data.labels[eval_split]
    raw = scores[eval_split] > dec.thresholds
    decoded = dec.apply(scores[eval_split], index)
    uncompleted = decoded if not dec.complete else dec.apply(scores[eval_split], index, back_off=False, complete=False)
    after = evaluate(gold, decoded, index)
    before = evaluate(gold, raw, index, include_per_label=False)
    dev = None if no_dev else evaluate(data.labels["dev"], dec.apply(scores["dev"], index), index,
                                       include_per_label=False)
    temperatures = list(dec.temperatures)
    before_cal, after_cal = calibrated(scores[eval_split], None, index), calibrated(scores[eval_split], temperatures, index)
    calibration = {"temperatures": temperatures, "ece_before": ece(before_cal, gold), "ece_after": ece(after_cal, gold),
                   "reliability_before": reliability(before_cal, gold), "reliability_after": reliability(after_cal, gold),
                   # each decode.consistent_scores choice on the calibrated probabilities
                   "consistent": {how: {"ece": ece(c, gold), "violations": violations(c, index)}
                                  for how in CONSISTENT for c in [consistent(after_cal, index, how)]}}
    # and the share of texts whose decoded set stops at an internal node before any completion
    decode_cfg = dec.to_json() | {"stopped_early": float(stops_early(uncompleted, index).mean()) if len(gold) else 0.0}
    # figures keyed by their split: a dataset without a test split is evaluated on dev, and says so
    figures = {"dev": after} if eval_split == "dev" else {"test": after, "dev": dev}
    metrics = {"split": eval_split, **figures, "decode": decode_cfg, "calibration": calibration,
               **({"sampling": data.sampling} if data.sampling else {}),
               "before_decoding": {k: before[k] for k in SUMMARY_KEYS},
               "consistency": {"before": {k: before[k] for k in ("inconsistent_samples", "orphan_nodes")},
                               "after": {k: after[k] for k in ("inconsistent_samples", "orphan_nodes")}},
               "inference": {"texts": n_infer, "seconds": round(infer_seconds, 2),
                             "texts_per_s": round(n_infer / max(infer_seconds, 1e-9), 1), "device": str(device),
                             "engine": engine} | ({"stored_texts": stored} if store else {})}
    if engine == "torch" and not tag:
        atomic_write_json(ckpt_dir / "decode.json", decode_cfg)
    atomic_write_json(run_dir / f"metrics{suffix}.json", metrics)
    _save_scores(run_dir / f"test_scores{suffix}.npz", scores[eval_split], gold, decoded)
    record = _record(run_dir, cfg, metrics, command, suffix, overwrite)
    if record is not None:
        metrics["record"] = str(record)
    return metrics


def check_same_taxonomy(ckpt, cfg: RunConfig) -> None:
    """Refuse a dataset whose taxonomy differs from the one the checkpoint was trained on: its
    labels would land on other columns or nowhere."""
    own = taxonomy_for(cfg)
    # a description is no label: a model trained before one was written scores the same columns
    changes = [c for c in ckpt.taxonomy.diff(own) if ": description " not in c]
    if changes:
        raise HmtcError(f"the dataset's taxonomy differs from the one the model was trained on ({len(changes)} "
                        f"change(s), model -> dataset): {'; '.join(changes[:5])}"
                        + ("; ..." if len(changes) > 5 else ""), own.path)


def tune_ensemble_weights(ckpt_dirs: list[Path], console: Console | None = None,
                          quiet: bool = False) -> tuple[list[float], dict]:
    """Weights for the ensemble of the checkpoints ``ckpt_dirs`` as a weighted sum on the first
    member's logit scale, tuned on the first member's dev split (:func:`hmtc.decode.tune_weights`;
    a fixed ``decode.threshold`` is kept, per-label thresholds are tuned afterwards by evaluation
    as for any model), each member scoring as evaluation scores it (stored frozen states
    included); and what the tuning saw: the dev split's size, the ensemble's dev micro-F1, each
    member's alone, and the half-octave steps each weight moved from its spread-matched start.

    Every member must have been trained beside that same dev split, else the weights would favour
    a member that trained on the texts they are tuned on."""
    console = console or Console(stderr=True, emoji=False)
    loaded = [load_checkpoint(c) for c in ckpt_dirs]
    cfg = loaded[0].config
    check_same_taxonomy(loaded[0], cfg)
    data = prepare(cfg, loaded[0].taxonomy, splits_wanted=["dev", "test"])
    for c, ck in zip(ckpt_dirs[1:], loaded[1:]):
        if prepare(ck.config, ck.taxonomy, splits_wanted=["dev"]).texts["dev"] != data.texts["dev"]:
            raise HmtcError("this member was trained beside another dev split than the first member (its seed, "
                            "dataset or data options differ): weights tuned there would favour what it trained on", c)
    if "test" not in data.labels:
        console.print("[yellow]warning[/]: the dataset has no test split; evaluation will report on the dev "
                      "split these weights are tuned on")
    torch.set_num_threads(cfg.train.threads or os.cpu_count() or 1)
    device = pick_device(cfg.train.device)
    with progress_bar(console, quiet) as progress:
        dev = []
        for ck in loaded:
            to_device(ck.model, device)
            dev.append(score_texts(ck.model, data.texts["dev"], progress)[0])
    threshold, gold, dec = cfg.decode.threshold, data.labels["dev"], data.decoding
    flags = (dec.method, dec.single_path, dec.at_least_one, dec.complete)
    fixed = None if threshold == "tune" else float(threshold)
    weights, f1, steps = tune_weights(dev, gold, data.index, *flags, threshold=fixed)
    alone = [tuned_micro_f1(s, gold, data.index, *flags) for s in dev]
    edge = [m + 1 for m, k in enumerate(steps) if m and abs(k) == max(map(abs, WEIGHT_STEPS))]
    if edge:
        console.print(f"[yellow]warning[/]: the weight of member(s) {', '.join(map(str, edge))} stopped at the "
                      "edge of the search (8x or 1/8 of its spread-matched start)")
    return [float(f"{w:.6g}") for w in weights], {"split": "dev", "texts": len(gold), "micro_f1": round(f1, 4),
                                                   "members_micro_f1": [round(f, 4) for f in alone],
                                                   "half_octave_steps": [int(k) for k in steps]}


def _save_scores(path: Path, scores: np.ndarray, gold: np.ndarray, pred: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, scores=scores, gold=gold, pred=pred)
    atomic_write_bytes(path, buf.getvalue())


def train_seconds(run_dir: Path) -> float:
    """Seconds of training behind a run: its own (``last/train_state.json``), or for an ensemble
    the sum over its members that ``hmtc ensemble`` wrote into its ``run.json``."""
    for path in (run_dir / "last" / "train_state.json", run_dir / "run.json"):
        if path.is_file() and (value := json.loads(path.read_text(encoding="utf-8")).get("train_seconds")) is not None:
            return float(value)
    return 0.0


def _record(run_dir: Path, cfg: RunConfig, metrics: dict, command: str | None, suffix: str = "",
            overwrite: bool = False) -> Path | None:
    """Write the run's record under ``train.record_dir``; its path, or None when that is empty."""
    path = record_path(cfg, run_dir, suffix)
    if path is None:
        return None
    write_record(path, build_record(run_dir, cfg, metrics, command, suffix), overwrite)
    return path


def build_record(run_dir: Path, cfg: RunConfig, metrics: dict, command: str | None, suffix: str = "") -> dict:
    """One run's record: config, command, commit, seed, time, machine and the figures of the
    evaluated split (``split``: test, or dev for a dataset without one)."""
    run_meta_path = run_dir / "run.json"
    run_meta = json.loads(run_meta_path.read_text(encoding="utf-8")) if run_meta_path.is_file() else {}
    state_path = run_dir / "last" / "train_state.json"
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
    test = evaluated(metrics)
    return {
        "name": run_key(run_dir, cfg.train.output_dir) + suffix, "config_name": cfg.name,
        "dataset": cfg.data.dataset, "split": metrics["split"], "model": cfg.model.name,
        "dataset_protocol": dataset_protocol(cfg.data.dataset, cfg.data.options or None),
        "encoder": cfg.model.encoder, "seed": cfg.train.seed,
        "command": run_meta.get("command"), "eval_command": command,
        "git_commit": run_meta.get("git_commit"), "eval_git_commit": git_commit(),
        **({"resumed_with_changes": run_meta["resumed_with_changes"]} if run_meta.get("resumed_with_changes") else {}),
        "started": run_meta.get("started"), "evaluated": now(),
        "train_seconds": round(train_seconds(run_dir), 1),
        "epochs_run": state.get("epoch"), "best_epoch": state.get("best_epoch"),
        "machine": run_meta.get("machine") or machine_info(),
        "metrics": {k: test[k] for k in SUMMARY_KEYS} | {
            "per_level": [{k: lv[k] for k in ("level", "micro_f1", "macro_f1")} for lv in test["per_level"]]},
        "calibration": {k: v for k, v in metrics.get("calibration", {}).items() if not k.startswith("reliability")},
        "before_decoding": metrics["before_decoding"], "decode": {k: v for k, v in metrics["decode"].items()
                                                                if k != "per_label_thresholds"},
        "inference": metrics["inference"], "history": state.get("history", []), "config": cfg.to_dict(),
        **({"sampling": metrics["sampling"]} if metrics.get("sampling") else {}),
        "run_dir": str(run_dir),
    } | ({"weights_tuned": run_meta["weights_tuned"]} if "weights_tuned" in run_meta else {})
