"""Run records: what ran, where, from which commit, and what it measured (one JSON per run)."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .config import RunConfig
from .errors import HmtcError
from .io import atomic_write_json




def write_run_files(folder: str | Path, config: RunConfig | None = None, **facts) -> None:
    """A run folder's ``run.json`` (how it was made: command, commit, start time, machine, and
    ``facts``) and, when given, ``config.json`` (its resolved config), each written atomically:
    the one place every command that makes a run folder (train, migrate, ensemble) writes them."""
    folder = Path(folder)
    if config is not None:
        atomic_write_json(folder / "config.json", config.to_dict())
    atomic_write_json(folder / "run.json", {"command": command_line(), "git_commit": git_commit(),
                                            "started": now(), "machine": machine_info(), **facts})

def evaluated(metrics: dict) -> dict:
    """The figures of the split a ``metrics.json`` evaluated: figures are keyed by their split's
    name (``metrics["split"]``: test, or dev where a dataset has no test split); a file written
    before that held them under "test" whatever the split was."""
    split = metrics.get("split", "test")
    if split != "test" and "test" in metrics:
        return metrics["test"]
    return metrics[split]

def git_commit(cwd: str | Path | None = None) -> str:
    """``HEAD`` of the repository holding ``cwd`` (default: the hmtc package that runs, wherever
    the command is started), with ``-dirty`` when tracked files changed; "unknown" outside one."""
    cwd = Path(__file__).parent if cwd is None else cwd
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cores": os.cpu_count(), "torch": torch.__version__, "hmtc": __version__,
            "torch_threads": torch.get_num_threads()}
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info


def command_line() -> str:
    """The command as a user would type it: ``python -m hmtc ...`` is recorded as ``hmtc ...``."""
    prog = Path(sys.argv[0])
    name = prog.parent.name if prog.name == "__main__.py" else prog.name
    return shlex.join([name, *sys.argv[1:]])


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---- record identity ------------------------------------------------------------------------
def run_key(run_dir: str | Path, output_dir: str | Path) -> str:
    """A run's identity: its folder relative to ``output_dir`` (``duee-msml``,
    ``duee-msml/seed-43``), or the folder's own name when it lies elsewhere."""
    run_dir = Path(run_dir).resolve()
    try:
        key = run_dir.relative_to(Path(output_dir).resolve()).as_posix()
    except ValueError:
        key = run_dir.name
    return key if key not in ("", ".") else run_dir.name


def record_path(cfg: RunConfig, run_dir: str | Path, suffix: str = "") -> Path | None:
    """Where the record of the run in ``run_dir`` goes (None when ``train.record_dir`` is empty)."""
    if not cfg.train.record_dir:
        return None
    return Path(cfg.train.record_dir) / f"{run_key(run_dir, cfg.train.output_dir)}{suffix}.json"


def check_record_free(path: Path | None, overwrite: bool) -> None:
    """Refuse, before any work, a run whose record exists (unless ``overwrite``) or whose record
    folder cannot be written (found after training, the record would be lost)."""
    if path is None:
        return
    if path.exists() and not overwrite:
        raise HmtcError("a record of this run exists; pass --overwrite to replace it, or give the run "
                        "another name (--set name=...) or folder (--out)", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise HmtcError(f"train.record_dir cannot be written ({e.strerror or e}); set another one, or "
                        "train.record_dir = \"\" for no record", path.parent) from None


def write_record(path: Path, record: dict, overwrite: bool = False) -> None:
    """Write a record atomically; without ``overwrite`` an existing record is never replaced,
    even by a writer that raced this one (the final step is a hard link, which fails on a clash)."""
    if overwrite:
        atomic_write_json(path, record)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    except FileExistsError:
        raise HmtcError("a record of this run exists; pass --overwrite to replace it", path) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


# ---- seed aggregates ------------------------------------------------------------------------
def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def aggregate_records(records: list[dict]) -> dict:
    """The mean record of one configuration's seeds.

    Every number in the seeds' ``metrics`` (and each level's ``micro_f1`` / ``macro_f1``) becomes
    its mean across seeds in ``metrics``, its sample standard deviation in ``metrics_std`` and
    its per-seed values in ``per_seed``; ``n`` counts the seeds. The seeds' records are kept
    whole under ``seed_records``.
    """
    if not records:
        raise ValueError("no records to aggregate")
    keys = [k for k, v in records[0]["metrics"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    mean, std, per_seed = {}, {}, {}
    for k in keys:
        vals = [r["metrics"][k] for r in records]
        per_seed[k] = vals
        mean[k], std[k] = mean_std(vals)
    levels_mean, levels_std = [], []
    for i, lv in enumerate(records[0]["metrics"].get("per_level", [])):
        m, s = {"level": lv["level"]}, {"level": lv["level"]}
        for k in ("micro_f1", "macro_f1"):
            vals = [r["metrics"]["per_level"][i][k] for r in records]
            per_seed[f"L{lv['level']}_{k}"] = vals
            m[k], s[k] = mean_std(vals)
        levels_mean.append(m)
        levels_std.append(s)
    mean["per_level"], std["per_level"] = levels_mean, levels_std
    first = records[0]
    train_seconds = [r.get("train_seconds") or 0.0 for r in records]
    return {
        "aggregate": True, "n": len(records), "seeds": [r.get("seed") for r in records],
        "dataset": first.get("dataset"), "dataset_protocol": first.get("dataset_protocol"),
        **({"split": first["split"]} if "split" in first else {}),
        "model": first.get("model"), "encoder": first.get("encoder"), "metrics": mean, "metrics_std": std, "per_seed": per_seed,
        "train_seconds": round(float(np.mean(train_seconds)), 1),
        "git_commits": sorted({r.get("git_commit") or "unknown" for r in records}),
        "machine": first.get("machine"), "seed_records": records,
    }
