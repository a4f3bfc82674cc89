"""Checkpoints are folders of safetensors + JSON; nothing is ever unpickled.

    model.safetensors   all weights
    checkpoint.json     run config, model name and options, hmtc version
    encoder/config.json the backbone's transformers config (rebuilt without a download)
    tokenizer/          the tokenizer (tokenizer.json ...)
    taxonomy.tax        the taxonomy, canonical text
    labels.json         the label index: node ids in column order, with levels
    decode.json         decoding method and tuned thresholds (written by eval)

A ``tfidf`` checkpoint has no model, encoder nor tokenizer: its own files are described in
:mod:`hmtc.models.tfidf`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from . import __version__
from .errors import HmtcError
from .io import atomic_dir, atomic_write_json, atomic_write_text
from .taxonomy import Taxonomy, TaxonomyIndex


def save_checkpoint(folder: str | Path, model: torch.nn.Module, tokenizer, taxonomy: Taxonomy,
                    config: dict, extra_files: dict[str, bytes] | None = None) -> Path:
    """Write a checkpoint folder atomically (built aside, then renamed into place)."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
        model.encoder.backbone.config.save_pretrained(tmp / "encoder")
        tokenizer.save_pretrained(tmp / "tokenizer")
        write_checkpoint_meta(tmp, taxonomy, config)
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
    return folder


def write_checkpoint_meta(folder: Path, taxonomy: Taxonomy, config: dict) -> None:
    """The files every checkpoint holds, whatever the model: taxonomy, label index, config."""
    index = taxonomy.compile()
    atomic_write_text(folder / "taxonomy.tax", taxonomy.dumps())
    atomic_write_json(folder / "labels.json", {"ids": list(index.ids), "levels": index.levels.tolist()})
    atomic_write_json(folder / "checkpoint.json", {"hmtc_version": __version__, "config": config})


@dataclass
class Checkpoint:
    """A loaded checkpoint: ready model (eval mode), tokenizer, taxonomy, config, decoding.

    ``model`` and ``tokenizer`` are None for model-free checkpoints (tfidf), which override
    :meth:`scores`.
    """

    model: torch.nn.Module | None
    tokenizer: object
    taxonomy: Taxonomy
    index: TaxonomyIndex
    config: dict
    decode: dict
    path: Path

    def scores(self, texts: list[str], batch_size: int | None = None, bf16: bool | None = None,
               progress=None) -> np.ndarray:
        """Logits (len(texts), n_nodes) in the label index's column order."""
        from .batching import tokenize
        from .train import predict_scores
        t = self.config["train"]
        ids = tokenize(self.tokenizer, texts, self.config["data"]["max_length"])
        return predict_scores(self.model, ids, self.tokenizer.pad_token_id or 0,
                              batch_size or t["eval_batch_size"], t["bf16"] if bf16 is None else bf16,
                              progress=progress)


def load_checkpoint(folder: str | Path, with_model: bool = True) -> Checkpoint:
    """Rebuild the model from config + safetensors; the label index must match the taxonomy.

    ``with_model=False`` loads everything but the weights (``model`` is None), for engines that
    bring their own (:mod:`hmtc.export`).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from .models import MODELS, make_config
    from .models.encoder import TextEncoder

    folder = Path(folder)
    meta_path = folder / "checkpoint.json"
    if not meta_path.is_file():
        raise HmtcError("not a checkpoint folder (no checkpoint.json)", folder)
    config = json.loads(meta_path.read_text(encoding="utf-8"))["config"]
    taxonomy = Taxonomy.load(folder / "taxonomy.tax")
    index = taxonomy.compile()
    labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    if list(index.ids) != labels["ids"]:
        raise HmtcError("taxonomy.tax does not match the label index the model was trained with",
                        folder / "taxonomy.tax")
    dec_path = folder / "decode.json"
    decode = json.loads(dec_path.read_text(encoding="utf-8")) if dec_path.is_file() else {}
    mcfg = config["model"]
    if mcfg["name"] == "tfidf":                 # model-free: no encoder, no tokenizer
        from .models.tfidf import load_tfidf
        return load_tfidf(folder, taxonomy, index, config, decode)
    if not with_model:
        return Checkpoint(None, AutoTokenizer.from_pretrained(folder / "tokenizer"), taxonomy, index, config,
                          decode, folder)
    enc_cfg = AutoConfig.from_pretrained(folder / "encoder")
    try:
        backbone = AutoModel.from_config(enc_cfg, add_pooling_layer=False)
    except TypeError:
        backbone = AutoModel.from_config(enc_cfg)
    encoder = TextEncoder(backbone, mcfg["layers"], mcfg["freeze_embeddings"], mcfg["freeze_layers"])
    model = MODELS.get(mcfg["name"])(encoder, index, make_config(mcfg["name"], mcfg["options"]))
    missing, unexpected = safetensors.torch.load_model(model, str(folder / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise HmtcError(f"weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}",
                        folder / "model.safetensors")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    return Checkpoint(model, tokenizer, taxonomy, index, config, decode, folder)
