"""Run configuration: a TOML file with [data], [model], [train] and [decode] tables.

A config may start with ``base = "other.toml"`` (a path relative to the config's own folder):
the base is read first (itself possibly with a base; a cycle is an error) and the config's own
keys are merged over it, tables key by key, so a variant states only what differs. ``name`` is
never inherited: a config's name is its own ``name`` or its file's stem.

Command-line ``--set section.key=value`` overrides any key (the value is read as TOML, so
``--set train.lr=1e-4`` is a float and ``--set model.kernels=[[3,5],[2]]`` a list);
``--set name=...`` renames the run.
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
        "seeds": [],                # several seeds: one run each under <out>/seed-<n>, plus a mean record
        "threads": 0,               # torch threads (0: all cores)
        "device": "auto",           # auto | cpu | cuda
        "eval_batch_size": 128,
        "bucket_size": 50,          # batches per length bucket
        "output_dir": "runs",
        # run records (one JSON per run, keyed by the run folder under output_dir); experiments/
        # configs set "experiments/records", so a plain run never touches the tracked records
        "record_dir": "runs/records",
    },
    "decode": {
        "method": "best",           # best | top-down | closure
        "threshold": "tune",        # "tune" (on dev) or a logit
        "per_label": False,         # tune one threshold per node on dev
        "single_path": "auto",      # auto: from the training data
        "at_least_one": "auto",     # auto: when every training sample has a label
        "complete": "auto",         # extend predictions down to a leaf; auto: when every training label set reaches one
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


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The TOML at ``path`` with its ``base`` chain merged under it (``name`` not inherited)."""
    key = path.resolve()
    if key in chain:
        cycle = " -> ".join(p.name for p in (*chain, key))
        raise ConfigError(f"base configs form a cycle: {cycle}", chain[-1])
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        where = f"base of {chain[-1]}: " if chain else ""
        raise ConfigError(f"{where}config file not found", path) from None
    except IsADirectoryError:
        raise ConfigError("a folder, not a config file", path) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", path) from None
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise ConfigError(f"base must be a config file name, not {base!r}", path)
    inherited = _read(path.parent / base, (*chain, key))
    inherited.pop("name", None)
    return _deep_merge(inherited, raw)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> dict:
    """Defaults, then the TOML file (over its ``base`` chain), then ``section.key=value`` overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        raw = _read(path)
        name = raw.pop("name", None)
        try:
            cfg = _merge(cfg, raw, "")
        except ConfigError as e:
            raise ConfigError(e.message, path) from None
        cfg["name"] = name or path.stem
    for key, value in parse_overrides(overrides or []).items():
        cfg = {**cfg, "name": str(value)} if key == "name" else _merge(cfg, {key: value}, "")
    cfg.setdefault("name", "run")
    check_run_name(cfg["name"])
    return cfg


def parse_overrides(items: list[str], only: str | None = None) -> dict:
    """``section.key=value`` strings (TOML values; a bare word is a string) as a nested dict,
    applied in order; ``name=value`` renames the run. ``only`` restricts them to one section."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or (len(parts) < 2 and parts != ["name"]):
            raise ConfigError(f"override {item!r} is not section.key=value (or name=value)")
        if only is not None and parts[0] != only:
            raise ConfigError(f"override {item!r}: only {only}.* keys can be set here")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value                      # a bare word is a string
        leaf = out
        for p in parts[:-1]:
            leaf = leaf.setdefault(p, {})
            if not isinstance(leaf, dict):
                raise ConfigError(f"override {item!r} sets a key inside a value")
        leaf[parts[-1]] = parsed
    return out


def check_run_name(name: str) -> None:
    """A run name becomes a folder and a record file: it may not escape them."""
    p = Path(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name:
        raise ConfigError(f"run name {name!r} must be a relative name without '..'")
