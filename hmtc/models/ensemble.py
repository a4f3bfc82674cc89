"""Score averaging over trained checkpoints of one taxonomy (``model.name = "ensemble"``).

For member checkpoints m = 1..M, each scoring a text with its own model, engine defaults and
tokenizer, the ensemble's logits are the weighted mean, or with ``mean = false`` the weighted sum,

    z = Σ_m w_m z_m / Σ_m w_m          (w_m = 1 unless ``weights`` are given)
    z = Σ_m w_m z_m                    (mean = false)

so thresholds are tuned and decoding runs on ``z`` as for any model, and ``train.teacher`` can
name an ensemble to distil it into one model. Members on other scales (a TF-IDF model's SVM
margins beside a neural model's logits) want other weights: ``hmtc ensemble --weights tune``
picks them on dev (:func:`hmtc.decode.tune_weights`) and writes them as a sum scaled so that
``z`` has the first member's spread on dev. Distilling such a sum scores the training texts,
where a TF-IDF member's margins are those of the texts it was fitted on (mostly beyond 1), so
its soft targets are close to the gold labels. An ensemble checkpoint holds no weights of its
own: its config lists the member checkpoint folders (``hmtc ensemble`` writes it), each loaded
by its own class and checked against its manifest; every member must carry the same label index.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ModelConfig, RunConfig, TextSpec
from ..errors import ConfigError, HmtcError
from ..io import check_manifest
from ..taxonomy import TaxonomyIndex
from .base import MODELS, Model, load_model, make_config


@dataclass
class EnsembleConfig:
    members: list[str]                      # checkpoint folders (absolute paths)
    weights: list[float] | None = None      # one per member; None: equal
    mean: bool = True                       # False: the weighted sum (tuned weights)

    def __post_init__(self):
        if len(self.members) < 2:
            raise ConfigError(f"model.options.members: an ensemble needs at least 2 members, got {len(self.members)}")
        if self.weights is not None and (len(self.weights) != len(self.members) or min(self.weights) <= 0):
            raise ConfigError("model.options.weights: one positive weight per member")


@MODELS.register("ensemble")
class EnsembleModel(Model):
    """The weighted mean, or sum, of its members' logits (see the module docstring)."""

    config_class = EnsembleConfig

    def __init__(self, members: list[Model], weights: Sequence[float] | None = None, mean: bool = True):
        self.members = members
        w = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum() if mean else w

    @classmethod
    def create(cls, config: ModelConfig, text: TextSpec, index: TaxonomyIndex) -> "EnsembleModel":
        raise ConfigError("an ensemble is assembled from trained checkpoints (hmtc ensemble), not trained")

    def save(self, folder: Path) -> None:
        """Nothing of its own: the members stay where they are, named in the config."""

    @classmethod
    def load(cls, folder: Path, config: ModelConfig, text: TextSpec, index: TaxonomyIndex) -> "EnsembleModel":
        options = make_config("ensemble", config.options)
        return cls([load_member(Path(m), index) for m in options.members], options.weights, options.mean)

    def scores(self, texts: Sequence[str], batch_size: int | None = None, bf16: bool | None = None,
               progress=None) -> np.ndarray:
        """The weighted mean (or sum) of the members' logits; each member scores with its own defaults."""
        return self.combine([m.scores(texts, None, None, progress) for m in self.members])

    def combine(self, member_scores: Sequence[np.ndarray]) -> np.ndarray:
        """``z`` from the members' scores (in member order), however they were computed."""
        return sum(w * s.astype(np.float64) for w, s in zip(self.weights, member_scores)).astype(np.float32)


def load_member(folder: Path, index: TaxonomyIndex) -> Model:
    """A member checkpoint's model, after checking its files and that its label index is ``index``'s."""
    meta = folder / "checkpoint.json"
    if not meta.is_file():
        raise HmtcError("ensemble member is not a checkpoint folder (no checkpoint.json)", folder)
    check_manifest(folder)
    try:
        stored = json.loads(meta.read_text(encoding="utf-8"))["config"]
        ids = json.loads((folder / "labels.json").read_text(encoding="utf-8"))["ids"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise HmtcError(f"ensemble member not readable: {e}", folder) from None
    if ids != list(index.ids):
        raise HmtcError("ensemble member has another label index than the ensemble", folder)
    return load_model(folder, RunConfig.from_dict(stored, meta), index)
