"""Seed-averaged runs: one configuration trained and evaluated once per seed, and its mean record.

``hmtc train CONFIG --seeds 42,43,44`` (or ``train.seeds`` in the config) trains seed ``n`` into
``<out>/seed-<n>/`` exactly as a single run with ``train.seed = n`` would, evaluates it (its own
record ``<record_dir>/<key>/seed-<n>.json``), then writes the mean record ``<record_dir>/<key>.json``
(:func:`hmtc.record.aggregate_records`: mean, sample standard deviation and per-seed values of
every metric, each seed's record inside) and ``<out>/seeds.json``. ``--resume`` continues an
interrupted set: seeds already recorded are read back (even when their run folders are gone), an
unfinished seed resumes from its ``last/`` checkpoint, and the others start. With
``train.cache_frozen`` the seeds share the frozen layers' states: the frozen part is the
pretrained encoder's whatever the seed, so a text is run through it once for the whole set and
a later seed computes only the texts its own dev split left in (``cache_reused`` in its train
state counts the texts it took; its ``train_seconds`` is the time it really took).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from .checkpoint import read_config
from .config import RunConfig
from .errors import ConfigError, HmtcError
from .evaluate import build_record, evaluate_run
from .home import run_folder
from .io import atomic_write_json
from .record import aggregate_records, check_record_free, command_line, git_commit, now, record_path, run_key
from .record import write_record
from .train import Trainer


def parse_seeds(value: str | list | None) -> list[int]:
    """``"42,43,44"`` or ``[42, 43, 44]`` as a list of distinct ints (empty: no seed list)."""
    if value is None or value == "" or value == []:
        return []
    items = value.split(",") if isinstance(value, str) else value
    try:
        seeds = [int(str(s).strip()) for s in items]
    except ValueError:
        raise ConfigError(f"seeds must be integers separated by commas, not {value!r}") from None
    if any(not 0 <= s < 2**32 for s in seeds):
        raise ConfigError(f"seeds must be whole numbers from 0 to {2**32 - 1}, not {value!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds repeat: {value!r}")
    return seeds


def seed_config(cfg: RunConfig, seed: int) -> RunConfig:
    """The configuration of one seed's run: ``train.seed = seed`` and no seed list."""
    return cfg.merged({"train": {"seed": seed, "seeds": []}})


def train_seeds(cfg: RunConfig, seeds: list[int], run_dir: str | Path | None = None, resume: bool = False,
                overwrite: bool = False, stop_after_epochs: int | None = None, no_eval: bool = False,
                console: Console | None = None, quiet: bool = False, accept_changes: bool = False) -> dict | None:
    """Train and evaluate every seed, then write the mean record; returns it (None when stopped
    early, when ``no_eval``, or on a non-main rank of a distributed job)."""
    console = console or Console(stderr=True, emoji=False)
    run_dir = run_folder(cfg, run_dir)
    mean_path = record_path(cfg, run_dir)
    check_record_free(mean_path, overwrite)
    plans = []
    for seed in seeds:              # refuse a clash before any training
        scfg, sdir = seed_config(cfg, seed), run_dir / f"seed-{seed}"
        path = record_path(scfg, sdir)
        # with --resume a seed is done once recorded (its record is the result, even if its run
        # folder is gone), or, without records, once its folder holds metrics.json
        done = resume and (path.is_file() if path is not None else (sdir / "metrics.json").is_file())
        if not done:
            check_record_free(path, overwrite)
        plans.append((seed, scfg, sdir, path, done))
    records, main = [], True
    frozen_caches: dict = {}        # the frozen layers' states of each text, for all seeds
    for seed, scfg, sdir, path, done in plans:
        if not done:
            console.print(f"[bold]seed {seed}[/] → {escape(str(sdir))}")
            state_file = sdir / "last" / "train_state.json"
            trainer = Trainer(scfg, sdir, resume=resume and state_file.is_file(),
                              stop_after_epochs=stop_after_epochs, console=console, quiet=quiet,
                              frozen_caches=frozen_caches, accept_changes=accept_changes)
            trainer.fit()
            main = trainer.dist_.is_main
            if not main:
                continue
            if no_eval or trainer.state_.epoch < scfg.train.epochs:
                console.print(f"stopped before seed {seed} finished; --resume continues: {escape(str(sdir))}")
                return None
            evaluate_run(sdir, console, quiet, overwrite=overwrite)
        if path is not None and path.is_file():
            records.append(json.loads(path.read_text(encoding="utf-8")))
        else:
            metrics = json.loads((sdir / "metrics.json").read_text(encoding="utf-8"))
            records.append(build_record(sdir, scfg, metrics, None))
    if not main:
        return None
    return _write_mean(cfg, seeds, records, run_dir, overwrite)


def _write_mean(cfg: RunConfig, seeds: list[int], records: list[dict], run_dir: Path, overwrite: bool,
                suffix: str = "") -> dict:
    """The mean record of ``records`` into ``<run_dir>/seeds<suffix>.json`` and the record folder."""
    agg = aggregate_records(records) | {
        "name": run_key(run_dir, cfg.train.output_dir) + suffix, "config_name": cfg.name,
        "command": command_line(), "git_commit": git_commit(), "evaluated": now(),
        "config": cfg.merged({"train": {"seeds": seeds}}).to_dict(), "run_dir": str(run_dir),
    }
    atomic_write_json(run_dir / f"seeds{suffix}.json", agg)
    path = record_path(cfg, run_dir, suffix)
    if path is not None:
        write_record(path, agg, overwrite)
        agg["record"] = str(path)
    return agg


def seed_folders(target: str | Path) -> list[Path]:
    """The trained ``seed-<n>`` folders of a seeds run (none for a single run or checkpoint)."""
    target = Path(target)
    if (target / "best").is_dir() or (target / "checkpoint.json").is_file():
        return []
    found = [p for p in target.glob("seed-*") if (p / "best" / "checkpoint.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]) if p.name[5:].lstrip("-").isdigit() else 0)


def evaluate_seeds(target: str | Path, console: Console | None = None, quiet: bool = False,
                   engine: str = "torch", overwrite: bool = False, decode_overrides: dict | None = None,
                   tag: str | None = None) -> dict:
    """Evaluate every seed of a seeds run as :func:`hmtc.evaluate.evaluate_run` does, then write
    their mean record (``<key><suffix>.json``) and ``<target>/seeds<suffix>.json``."""
    target = Path(target)
    folders = seed_folders(target)
    if not folders:
        raise HmtcError("no trained seed-<n> folders", target)
    suffix = ("" if engine == "torch" else f".{engine}") + (f".{tag}" if tag else "")
    records, cfg = [], None
    for folder in folders:
        metrics = evaluate_run(folder, console, quiet, command_line(), engine, overwrite, decode_overrides, tag)
        seed_cfg = read_config(folder / "best")
        if decode_overrides:
            seed_cfg = seed_cfg.merged({"decode": decode_overrides})
        cfg = cfg or seed_cfg
        path = metrics.get("record")
        records.append(json.loads(Path(path).read_text(encoding="utf-8")) if path
                       else build_record(folder, seed_cfg, metrics, command_line(), suffix))
    seeds = [r["seed"] for r in records]
    return _write_mean(cfg, seeds, records, target, overwrite, suffix)
