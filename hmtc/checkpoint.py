"""Checkpoint folders: safetensors + JSON; nothing is ever unpickled.

    checkpoint.json     run config (:meth:`hmtc.config.RunConfig.to_dict`), hmtc version
    taxonomy.tax        the taxonomy, canonical text
    labels.json         the label index: node ids in column order, with levels, and the
                        training texts of each node (support; what a migration weighs by)
    decode.json         decoding method and tuned thresholds (written by eval)
    ...                 the model's own files (:meth:`hmtc.models.base.Model.save`): for the
                        neural models model.safetensors, encoder/config.json, tokenizer/;
                        for the others those their module names

    manifest.json       the SHA-256 of every file above, checked on load

``best`` and ``last`` are symlinks to version folders (``.best.v000007``): a new checkpoint is
built aside and the link switched to it atomically, so a whole checkpoint is on disk at every
instant, and a damaged file is named when loaded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import __version__
from .config import RunConfig
from .decode import DECODERS, Decoding
from .errors import HmtcError
from .io import MANIFEST, atomic_dir, atomic_write_json, atomic_write_text, check_manifest, versioned_dir, write_manifest
from .taxonomy import Taxonomy, TaxonomyIndex

if TYPE_CHECKING:       # the models import torch; reading a checkpoint's metadata needs none of it
    from .models import Model


def save_checkpoint(folder: str | Path, model: Model, taxonomy: Taxonomy, config: RunConfig,
                    extra_files: dict[str, bytes] | None = None, plain: bool = False,
                    support: np.ndarray | None = None) -> Path:
    """Write a checkpoint folder: built aside with a manifest of its files' hashes, then switched
    in as ``folder``'s next version (:func:`hmtc.io.versioned_dir`), or with ``plain`` renamed
    into place as an ordinary folder (:func:`hmtc.io.atomic_dir`: what a user copies and
    archives; a crash leaves the old folder or the new one beside a hidden copy)."""
    folder = Path(folder)
    with (atomic_dir if plain else versioned_dir)(folder) as tmp:
        model.save(tmp)
        write_checkpoint_meta(tmp, taxonomy, config, support)
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        if plain:
            write_manifest(tmp)
    return folder


def is_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` is a checkpoint folder and holds nothing but what its manifest lists
    (so replacing it loses nothing hmtc did not write)."""
    try:
        files = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
    return "checkpoint.json" in files and present <= set(files) | {MANIFEST}


def write_checkpoint_meta(folder: Path, taxonomy: Taxonomy, config: RunConfig, support: np.ndarray | None = None) -> None:
    """The files every checkpoint holds, whatever the model: taxonomy, label index (with each
    node's training support when known), config."""
    index = taxonomy.compile()
    atomic_write_text(folder / "taxonomy.tax", taxonomy.dumps())
    labels = {"ids": list(index.ids), "levels": index.levels.tolist()}
    if support is not None:
        labels["support"] = [int(v) for v in support]
    atomic_write_json(folder / "labels.json", labels)
    atomic_write_json(folder / "checkpoint.json", {"hmtc_version": __version__, "config": config.to_dict()})


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (any :class:`~hmtc.models.base.Model`; None when another
    engine scores), taxonomy, config and decoding.

    ``scorer`` scores texts: the model itself, or another engine over the same folder
    (:mod:`hmtc.loading`); ``path_scores``: whether its scores are path logits
    (:meth:`hmtc.models.base.Model.path_scores`). :func:`hmtc.loading.load_checkpoint` loads one.
    """

    model: Model | None
    taxonomy: Taxonomy
    index: TaxonomyIndex
    config: RunConfig
    decode: dict
    path: Path
    scorer: Model | None = None
    path_scores: bool = False

    def __post_init__(self):
        self.scorer = self.scorer or self.model

    @property
    def decoding(self) -> Decoding:
        """``decode`` (the run's decode.json) as its :class:`~hmtc.decode.Decoding`."""
        return Decoding.from_json(self.decode, self.config.decode.method)

    def scores(self, texts: list[str], batch_size: int | None = None, bf16: bool | None = None,
               progress=None) -> np.ndarray:
        """Scores (len(texts), n_nodes) in the label index's column order (None: the engine's defaults,
        which for the torch models are the run's ``eval_batch_size`` and ``bf16``)."""
        return self.scorer.scores(texts, batch_size, bf16, progress=progress)


def read_meta(folder: str | Path) -> tuple[RunConfig, Taxonomy, TaxonomyIndex, dict]:
    """(config, taxonomy, index, decode) of a checkpoint folder; the label index must match."""
    folder = Path(folder)
    if not (folder / "checkpoint.json").is_file():
        raise HmtcError("not a checkpoint folder (no checkpoint.json)", folder)
    check_manifest(folder)
    config = read_config(folder)
    taxonomy = Taxonomy.load(folder / "taxonomy.tax")
    index = taxonomy.compile()
    labels = _json(folder / "labels.json")
    if list(index.ids) != labels["ids"]:
        raise HmtcError("taxonomy.tax does not match the label index the model was trained with",
                        folder / "taxonomy.tax")
    dec_path = folder / "decode.json"
    decode = check_decode(_json(dec_path), index, dec_path) if dec_path.exists() else {}
    return config, taxonomy, index, decode


def read_support(folder: str | Path) -> np.ndarray | None:
    """Each node's training texts (labels.json, column order), None for a checkpoint saved without."""
    support = _json(Path(folder) / "labels.json").get("support")
    if not isinstance(support, list) or not all(isinstance(v, int) and v >= 0 for v in support):
        return None
    return np.asarray(support, dtype=np.int64)


def read_config(folder: str | Path) -> RunConfig:
    """The run config stored in a checkpoint's checkpoint.json (brought up to date and checked:
    :meth:`RunConfig.from_dict`), without checking the manifest (:func:`read_meta` checks it;
    this is the cheap look before choosing how to load)."""
    meta_path = Path(folder) / "checkpoint.json"
    if not meta_path.is_file():
        raise HmtcError("not a checkpoint folder (no checkpoint.json)", Path(folder))
    config = _json(meta_path).get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise HmtcError("no run config inside", meta_path)
    return RunConfig.from_dict(config, meta_path)


def check_decode(decode: dict, index: TaxonomyIndex, path: Path) -> dict:
    """``decode`` (a checkpoint's decode.json, which ``hmtc eval`` rewrites beside the manifest)
    when every key it uses holds what evaluation writes: a known method, booleans, a finite
    threshold, one threshold per node, one positive temperature per level; else an error naming
    the file and key."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)

    def bad(key: str, what: str):
        raise HmtcError(f"{key} must be {what}, not {str(decode[key])[:60]!r}; run hmtc eval again to rewrite it", path)

    if "method" in decode and not (isinstance(decode["method"], str) and decode["method"] in DECODERS):
        bad("method", f"one of {', '.join(DECODERS.names())}")
    for key in ("single_path", "at_least_one", "complete", "back_off"):
        if key in decode and not isinstance(decode[key], bool):
            bad(key, "true or false")
    if "threshold" in decode and not (number(decode["threshold"]) and math.isfinite(decode["threshold"])):
        bad("threshold", "a finite number")
    per_label = decode.get("per_label_thresholds")
    if per_label is not None and not (isinstance(per_label, list) and len(per_label) == index.n_nodes
                                      and all(number(v) for v in per_label)):
        bad("per_label_thresholds", f"a list of {index.n_nodes} numbers, one per node")
    temps = decode.get("temperatures")
    if temps is not None and not (isinstance(temps, list) and len(temps) == index.depth
                                  and all(number(v) and 0 < v < math.inf for v in temps)):
        bad("temperatures", f"a list of {index.depth} positive numbers, one per level")
    return decode


def _json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HmtcError(f"not valid JSON: {e}", path) from None
    except RecursionError:                   # json recurses per level of nesting
        raise HmtcError("not valid JSON: nested too deeply", path) from None
    if not isinstance(obj, dict):
        raise HmtcError("not a JSON object", path)
    return obj


def locate(target: str | Path) -> tuple[Path, Path]:
    """(run folder, checkpoint folder) for a run folder (uses ``best/``) or a checkpoint."""
    target = Path(target)
    if (target / "best" / "checkpoint.json").is_file():
        return target, target / "best"
    if (target / "checkpoint.json").is_file():
        return target.parent, target
    raise HmtcError("neither a run folder (with best/) nor a checkpoint folder", target)
