"""A baseline fitted beside a run (``train.baseline``): another config's model on the same data,
split, seed and few-shot draw, evaluated the same way, its test figures stored in the run's
``metrics.json`` under ``baseline`` and shown beside the run's own.

A new user's first run then says where it stands (the quickstart fits TF-IDF in seconds beside
MSML) instead of leaving the comparison to a second command.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from .config import RunConfig, load_config
from .errors import ConfigError
from .evaluate import SUMMARY_KEYS, evaluate_run, train_seconds
from .io import atomic_write_json
from .train import Trainer


def baseline_config(cfg: RunConfig) -> RunConfig:
    """The baseline's config: ``train.baseline``'s file with this run's ``[data]``, seed and
    name; no record of its own. A missing or invalid file is a ConfigError now, before training."""
    path = Path(cfg.train.baseline)
    if not path.is_file():
        raise ConfigError(f"train.baseline: no config file at {path}")
    base = load_config(path)
    return base.merged({"name": f"{cfg.name}.baseline", "data": asdict(cfg.data),
                        "train": {"seed": cfg.train.seed, "record_dir": "", "seeds": []}})


def fit_baseline(cfg: RunConfig, run_dir: Path, console: Console | None = None, quiet: bool = False) -> dict:
    """Fit and evaluate the baseline in ``run_dir/baseline`` and add its figures to the run's
    ``metrics.json``; returns them."""
    bcfg = baseline_config(cfg)
    folder = run_dir / "baseline"
    Trainer(bcfg, folder, console=console, quiet=True).fit()
    metrics = evaluate_run(folder, console, quiet=True, overwrite=True)
    split = metrics["split"]
    out = {"config": cfg.train.baseline, "model": bcfg.model.name, "split": split,
           split: {k: metrics[split][k] for k in SUMMARY_KEYS}, "train_seconds": round(train_seconds(folder), 1)}
    path = run_dir / "metrics.json"
    atomic_write_json(path, json.loads(path.read_text(encoding="utf-8")) | {"baseline": out})
    return out
