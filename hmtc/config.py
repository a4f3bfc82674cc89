"""Run configuration: a TOML file with [data], [model], [train] and [decode] tables.

Command-line ``--set section.key=value`` overrides any key (the value is read as TOML, so
``--set train.lr=1e-4`` is a float and ``--set model.kernels=[[3,5],[2]]`` a list).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {
        "dataset": "duee",          # built-in name or dataset TOML
        "data_dir": "",             # else $HMTC_DATA
        "taxonomy": "",             # else the dataset's own
        "dev_fraction": 0.05,       # carved from train (seeded) when the dataset has no dev split
        "max_length": 128,
        "train_limit": 0,           # use only the first N training samples (0: all)
    },
    "model": {
        "name": "msml",
        "encoder": "me5-small",     # built-in name, local folder or hub id
        "layers": [-1],             # hidden layers mixed into the token states
        "freeze_embeddings": True,
        "freeze_layers": 0,
        # dropout masks from 16-bit slices of 64-bit draws and eager attention (hmtc.models.dropout):
        # same masks in distribution, 1.2-1.5x faster CPU steps (interleaved bench); a different random stream
        "fast_dropout": False,
        "encoder_options": {},      # passed to from_pretrained, e.g. { hidden_dropout_prob = 0.0 }
        "options": {},              # the model's own config (e.g. MSMLConfig fields)
    },
    "train": {
        "epochs": 3,
        "batch_size": 32,
        "lr": 1e-4,                 # top encoder layer
        "head_lr": 5e-3,
        "layer_decay": 1.0,
        "weight_decay": 0.01,
        "warmup": 0.06,             # fraction of steps
        "schedule": "linear",       # linear | cosine | constant
        "clip": 1.0,
        "ema": 0.0,                 # EMA decay of weights (0: off)
        # regularisers of each step (hmtc.regularizers); 0: off, any combination works
        "fgm_epsilon": 0.0,         # FGM: adversarial step of this norm on each text's word embeddings
        "gp_weight": 0.0,           # gradient penalty λ·mean ||∇_emb loss||² (finite differences)
        "rdrop_alpha": 0.0,         # R-Drop: α·symmetric KL between two dropout passes
        # run the frozen embeddings + model.freeze_layers once (no dropout) and train the layers
        # above on their cached output every epoch: much less work per step on a CPU
        "cache_frozen": False,
        # knowledge distillation: also fit a trained run's logits on the training texts
        # (loss = (1 - α)·task loss + α·soft-target BCE at temperature T; hmtc.losses)
        "teacher": "",              # run or checkpoint folder with the same taxonomy ("": off)
        "distill_alpha": 0.5,
        "distill_temperature": 1.0,
        "patience": 0,              # epochs without dev gain before stopping (0: never)
        "metric": "micro_f1",
        "bf16": False,              # CPU/GPU autocast
        "seed": 42,
        "threads": 0,               # torch threads (0: all cores)
        "device": "auto",           # auto | cpu | cuda
        "eval_batch_size": 128,
        "bucket_size": 50,          # batches per length bucket
        "output_dir": "runs",
        "record_dir": "experiments/records",
    },
    "decode": {
        "method": "best",           # best | top-down | closure
        "threshold": "tune",        # "tune" (on dev) or a logit
        "per_label": False,         # tune one threshold per node on dev
        "single_path": "auto",      # auto: from the training data
        "at_least_one": "auto",     # auto: when every training sample has a label
    },
}


def _merge(base: dict, extra: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if key not in base:
            raise ConfigError(f"unknown key {where + '.' if where else ''}{key}; "
                              f"known: {', '.join(sorted(base))}")
        if key in ("options", "encoder_options"):   # validated by the model / transformers
            out[key] = {**base[key], **value}
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _merge(base[key], value, f"{where}.{key}" if where else key)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> dict:
    """Defaults, then the TOML file, then ``section.key=value`` overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config file not found", path) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"invalid TOML: {e}", path) from None
        name = raw.pop("name", None)
        try:
            cfg = _merge(cfg, raw, "")
        except ConfigError as e:
            raise ConfigError(e.message, path) from None
        cfg["name"] = name or path.stem
    for item in overrides or []:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2:
            raise ConfigError(f"override {item!r} is not section.key=value")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value                      # a bare word is a string
        node: dict = {}
        leaf = node
        for p in parts[:-1]:
            leaf = leaf.setdefault(p, {})
        leaf[parts[-1]] = parsed
        cfg = _merge(cfg, node, "")
    cfg.setdefault("name", "run")
    return cfg
