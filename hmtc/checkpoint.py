"""Checkpoint folders: safetensors + JSON; nothing is ever unpickled.

    checkpoint.json     run config (model name and options inside), hmtc version
    taxonomy.tax        the taxonomy, canonical text
    labels.json         the label index: node ids in column order, with levels
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .errors import HmtcError
from .io import MANIFEST, atomic_dir, atomic_write_json, atomic_write_text, check_manifest, versioned_dir, write_manifest
from .models import MODELS, Model
from .taxonomy import Taxonomy, TaxonomyIndex


def save_checkpoint(folder: str | Path, model: Model, taxonomy: Taxonomy, config: dict,
                    extra_files: dict[str, bytes] | None = None, plain: bool = False) -> Path:
    """Write a checkpoint folder: built aside with a manifest of its files' hashes, then switched
    in as ``folder``'s next version (:func:`hmtc.io.versioned_dir`), or with ``plain`` renamed
    into place as an ordinary folder (:func:`hmtc.io.atomic_dir`: what a user copies and
    archives; a crash leaves the old folder or the new one beside a hidden copy)."""
    folder = Path(folder)
    with (atomic_dir if plain else versioned_dir)(folder) as tmp:
        model.save(tmp)
        write_checkpoint_meta(tmp, taxonomy, config)
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


def write_checkpoint_meta(folder: Path, taxonomy: Taxonomy, config: dict) -> None:
    """The files every checkpoint holds, whatever the model: taxonomy, label index, config."""
    index = taxonomy.compile()
    atomic_write_text(folder / "taxonomy.tax", taxonomy.dumps())
    atomic_write_json(folder / "labels.json", {"ids": list(index.ids), "levels": index.levels.tolist()})
    atomic_write_json(folder / "checkpoint.json", {"hmtc_version": __version__, "config": config})


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (any :class:`~hmtc.models.base.Model`; None when another
    engine scores), taxonomy, config and decoding.

    ``scorer`` scores texts: the model itself, or another engine over the same folder
    (:mod:`hmtc.export`).
    """

    model: Model | None
    taxonomy: Taxonomy
    index: TaxonomyIndex
    config: dict
    decode: dict
    path: Path
    scorer: Model | None = None

    def __post_init__(self):
        self.scorer = self.scorer or self.model

    def scores(self, texts: list[str], batch_size: int | None = None, bf16: bool | None = None,
               progress=None) -> np.ndarray:
        """Scores (len(texts), n_nodes) in the label index's column order (None: the engine's defaults,
        which for the torch models are the run's ``eval_batch_size`` and ``bf16``)."""
        return self.scorer.scores(texts, batch_size, bf16, progress=progress)


def read_meta(folder: str | Path) -> tuple[dict, Taxonomy, TaxonomyIndex, dict]:
    """(config, taxonomy, index, decode) of a checkpoint folder; the label index must match."""
    folder = Path(folder)
    meta_path = folder / "checkpoint.json"
    if not meta_path.is_file():
        raise HmtcError("not a checkpoint folder (no checkpoint.json)", folder)
    check_manifest(folder)
    config = _json(meta_path).get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise HmtcError("no run config inside", meta_path)
    taxonomy = Taxonomy.load(folder / "taxonomy.tax")
    index = taxonomy.compile()
    labels = _json(folder / "labels.json")
    if list(index.ids) != labels["ids"]:
        raise HmtcError("taxonomy.tax does not match the label index the model was trained with",
                        folder / "taxonomy.tax")
    dec_path = folder / "decode.json"
    decode = _json(dec_path) if dec_path.is_file() else {}
    return config, taxonomy, index, decode


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


def load_checkpoint(folder: str | Path) -> Checkpoint:
    """The checkpoint in ``folder``, its model loaded by the class its config names."""
    folder = Path(folder)
    config, taxonomy, index, decode = read_meta(folder)
    return Checkpoint(MODELS.get(config["model"]["name"]).load(folder, config, index), taxonomy, index, config,
                      decode, folder)
