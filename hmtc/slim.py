"""Small artefacts: a finished checkpoint with its vocabulary pruned to what its data uses and its
weights stored in a compact dtype.

An encoder's word-embedding matrix is ``V × d``; multilingual-e5-small's ``V`` is 250,037 of its
119.7 M parameters (96 M, 80%), while one corpus uses a few thousand pieces. Pruning keeps the rows
of the pieces the training and dev texts use (each after the model's text prefix), the taxonomy's
names and descriptions, every special token, every one-character piece and the ``KEEP_TOP`` most
probable pieces of the tokenizer's own model, and renumbers the tokenizer to match
(:func:`hmtc.encoders.prune.prune_tokenizer_json`):

* a text of the corpus segments exactly as before, so its scores are unchanged;
* a text outside it keeps the pieces of its common words (the most probable pieces: what a
  few-shot corpus of a few hundred texts could never cover alone); a rarer piece that no kept
  text uses splits into shorter kept pieces, down to single characters, never into ``<unk>`` for
  a character the original vocabulary holds. Its scores can change; the test split measures by
  how much (experiments/artefacts.md).

Stored in ``float16`` (``train.save_dtype``), every floating tensor takes half the bytes; the model
loads them back into ``float32`` parameters, so only the rounding of the stored values differs
(relative error at most 2⁻¹¹; under bf16 autocast a matmul rounds its weights to 2⁻⁸ anyway).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import safetensors.torch
import torch

from .encoders.prune import prune_rows, prune_tokenizer_json, remap_tokenizer_config
from .io import MANIFEST, atomic_write_json, atomic_write_text, versioned_dir

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
KEEP_TOP = 32_768        # most probable pieces kept whatever the corpus: 12.6 MB of float16 rows at d = 384


def slim_checkpoint(folder: str | Path, texts: Iterable[str], prefixes: Iterable[str] = (),
                    prune: bool = True, dtype: str = "float16", keep_top: int = KEEP_TOP) -> dict:
    """Rewrite the checkpoint ``folder`` (``best/``) as its next version, pruned and cast.

    Parameters
    ----------
    folder : str or Path
        A checkpoint folder holding ``model.safetensors`` and, for the encoder models,
        ``tokenizer/tokenizer.json`` and ``encoder/config.json``. Other checkpoints are left as
        they are.
    texts : iterable of str
        What the model has seen: training and dev texts, names. Each is kept as segmented alone
        and after every prefix in ``prefixes``.
    prefixes : iterable of str
        The prefixes texts are encoded with (e5's ``"query: "``; empty: none).
    prune : bool
        Prune the vocabulary.
    dtype : {"float32", "float16", "bfloat16"}
        How floating tensors are stored.
    keep_top : int
        The most probable pieces kept whatever the corpus (0: the corpus and single characters only).

    Returns
    -------
    dict
        ``bytes_before`` / ``bytes_after`` of the weights, ``vocab_before`` / ``vocab_after``
        when pruned, ``dtype``; empty when the folder holds no weights to slim.
    """
    folder = Path(folder)
    weights, tok_path, enc_path = folder / "model.safetensors", folder / "tokenizer" / "tokenizer.json", \
        folder / "encoder" / "config.json"
    if not weights.is_file() or (dtype == "float32" and not prune):
        return {}
    tensors = safetensors.torch.load_file(str(weights))
    info: dict = {"bytes_before": weights.stat().st_size, "dtype": dtype}
    with versioned_dir(folder) as tmp:
        for item in folder.iterdir():        # hard links: the files that change are replaced, never edited
            if item.name != MANIFEST:
                (shutil.copytree if item.is_dir() else os.link)(item, tmp / item.name,
                                                                **({"copy_function": os.link} if item.is_dir() else {}))
        if prune and tok_path.is_file() and enc_path.is_file():
            tj, keep, new_id, old = prune_tokenizer_json(json.loads(tok_path.read_text(encoding="utf-8")), texts,
                                                         [p for p in prefixes if p], keep_chars=True,
                                                         keep_top=keep_top, path=tok_path)
            config = json.loads(enc_path.read_text(encoding="utf-8"))
            prune_rows(tensors, config, keep, new_id, path=weights)
            atomic_write_text(tmp / "tokenizer" / "tokenizer.json", json.dumps(tj, ensure_ascii=False))
            atomic_write_json(tmp / "encoder" / "config.json", config)
            tc_path = tmp / "tokenizer" / "tokenizer_config.json"
            if tc_path.is_file():
                atomic_write_json(tc_path, remap_tokenizer_config(json.loads(tc_path.read_text(encoding="utf-8")),
                                                                  new_id))
            info |= {"vocab_before": old, "vocab_after": len(keep)}
        cast = DTYPES[dtype]
        tensors = {k: (v.to(cast) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
        (tmp / "model.safetensors").unlink()
        safetensors.torch.save_file(tensors, str(tmp / "model.safetensors"))
        info["bytes_after"] = (tmp / "model.safetensors").stat().st_size
    return info
