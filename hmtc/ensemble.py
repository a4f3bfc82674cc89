"""Ensembles of trained runs (``hmtc ensemble``): a checkpoint folder whose model is the weighted
mean, or sum, of its members' logits (:class:`hmtc.models.ensemble.EnsembleModel`), written
beside a ``run.json`` that says how it was made and what its members cost to train."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from .checkpoint import locate, read_meta, write_checkpoint_meta
from .errors import HmtcError
from .evaluate import train_seconds, tune_ensemble_weights
from .io import versioned_dir
from .models.base import make_config
from .record import write_run_files
from .seeds import seed_folders


def parse_weights(weights: str | None) -> list[float] | str | None:
    """``--weights``: comma-separated numbers, ``"tune"``, or None (equal)."""
    if weights is None or weights == "tune":
        return weights
    try:
        w = [float(x) for x in weights.split(",")]
    except ValueError:
        raise HmtcError(f"--weights {weights!r}: comma-separated numbers, or 'tune'") from None
    if not _usable(w):
        raise HmtcError(f"--weights {weights!r}: finite numbers, 0 or more, not all 0")
    return w


def _usable(w: list[float]) -> bool:
    return all(math.isfinite(x) and x >= 0 for x in w) and any(w)


def build_ensemble(members: list[str | Path], out: str | Path, weights: list[float] | str | None = None,
                   console: Console | None = None) -> list[tuple[Path, dict]]:
    """Write the ensemble of ``members`` (trained run, checkpoint or seeds folders of one label
    index) to ``out``; with seeds folders, one ensemble per seed they share, ``out/seed-<n>``.

    Parameters
    ----------
    members : list of str or Path
        Two or more.
    out : str or Path
        A new folder, or an earlier ensemble's (never a member, never a trained run).
    weights : list of float, "tune" or None
        One weight per member (finite, 0 or more, not all 0); "tune": a sum weighted on the
        members' shared dev split (:func:`hmtc.evaluate.tune_ensemble_weights`); None: the mean.
    console : rich Console, optional
        Where the weight search reports.

    Returns
    -------
    list of (folder, tuned)
        Each ensemble written and what tuning found there ({} without tuning).
    """
    out, members = Path(out), [Path(m) for m in members]
    tune = weights == "tune"
    w = None if tune else weights
    if len(members) < 2:
        raise HmtcError("an ensemble needs at least 2 members")
    if w is not None and len(w) != len(members):
        raise HmtcError(f"--weights: {len(w)} weight(s) for {len(members)} members")
    if w is not None and not _usable(w):
        raise HmtcError(f"weights {w}: finite numbers, 0 or more, not all 0")
    for member in members:
        if member.resolve() == out.resolve():
            raise HmtcError("-o is one of the members; write the ensemble to a folder of its own", out)
    if (out / "run.json").is_file() and "members" not in json.loads((out / "run.json").read_text(encoding="utf-8")):
        raise HmtcError("-o holds a trained run, not an ensemble; write the ensemble to a folder of its own", out)
    per_member = [{f.name: f for f in seed_folders(m)} for m in members]
    if all(per_member):
        shared = sorted(set.intersection(*(set(p) for p in per_member)), key=lambda n: int(n[5:]))
        if not shared:
            raise HmtcError("the members' seeds folders share no seed")
        targets = [(out / name, [p[name] for p in per_member]) for name in shared]
    elif any(per_member):
        raise HmtcError("mix of seeds folders and single runs: give all of one kind")
    else:
        targets = [(out, members)]
    written = []
    for folder, runs in targets:
        ckpts = [locate(r)[1].resolve() for r in runs]
        config, taxonomy, index, _ = read_meta(ckpts[0])
        for c in ckpts[1:]:
            if list(read_meta(c)[2].ids) != list(index.ids):
                raise HmtcError("this member's label index differs from the first member's", c)
        options, tuned = {"members": [str(c) for c in ckpts], "weights": w}, {}
        if tune:
            started = time.time()
            options["weights"], tuned = tune_ensemble_weights(ckpts, console)
            options["mean"], tuned["seconds"] = False, round(time.time() - started, 1)
        make_config("ensemble", options)          # refused here, not when it is first loaded
        # the options are the ensemble's, not merged over the first member's
        config = replace(config, name=folder.resolve().name,
                         model=replace(config.model, name="ensemble", options=options))
        with versioned_dir(folder / "best") as tmp:
            write_checkpoint_meta(tmp, taxonomy, config)
        # what its record needs: how it was made, and the training time of all its members
        write_run_files(folder, members=[str(r) for r in runs],
                        train_seconds=sum(train_seconds(locate(r)[0]) for r in runs),
                        **({"weights_tuned": tuned} if tuned else {}))
        written.append((folder, tuned | ({"weights": options["weights"]} if tuned else {})))
    return written
