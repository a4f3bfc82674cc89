"""Shrink an encoder's vocabulary to the tokens a corpus uses (smaller embedding matrix, same outputs)."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

from ..io import atomic_dir
from .registry import EncoderError

# Files that hold another copy of the vocabulary or weights; they would disagree with the pruned ids.
_STALE = {"sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "pytorch_model.bin",
          "tf_model.h5", "flax_model.msgpack", "model.safetensors.index.json", "onnx", "openvino"}
_VOCAB_TENSOR_SUFFIXES = ("word_embeddings.weight", "decoder.weight", "decoder.bias",
                          "predictions.bias", "lm_head.weight", "lm_head.bias")


def _remap_post_processor(pp: dict | None, new_id: dict[int, int]) -> None:
    """Rewrite the special-token ids a post-processor inserts (Template, Bert/Roberta, Sequence)."""
    if not pp:
        return
    for sub in pp.get("processors", []) or []:
        _remap_post_processor(sub, new_id)
    for key in ("sep", "cls"):
        if isinstance(pp.get(key), list):
            pp[key][1] = new_id[pp[key][1]]
    for spec in (pp.get("special_tokens") or {}).values():
        spec["ids"] = [new_id[i] for i in spec["ids"]]


def prune_tokenizer_json(tj: dict, texts: Iterable[str], prefixes: Iterable[str] = (), keep_special: bool = True,
                         keep_chars: bool = False, keep_top: int = 0, path: str | Path | None = None
                         ) -> tuple[dict, list[int], dict[int, int], int]:
    """A tokenizer.json pruned to the pieces ``texts`` (each alone and after each prefix) use.

    Returns ``(tokenizer json, kept old ids ascending, old id -> new id, old vocabulary size)``;
    every corpus text segments as before (checked), with renumbered ids. ``keep_chars`` also keeps
    every one-character piece, so a text outside the corpus falls back to single characters
    instead of ``<unk>``; ``keep_top`` keeps that many most probable pieces of a Unigram model
    (the first ids of a WordPiece vocabulary), so the common words of any text keep their pieces.
    """
    tj = copy.deepcopy(tj)
    model = tj["model"]
    if model["type"] not in ("Unigram", "WordPiece"):
        raise EncoderError(f"vocabulary pruning supports Unigram and WordPiece tokenizers, not {model['type']}", path=path)
    tok = Tokenizer.from_str(json.dumps(tj))
    tok.no_padding()
    tok.no_truncation()
    texts, prefixes = list(texts), list(prefixes)
    corpus = texts + [p + t for p in prefixes for t in texts] + prefixes
    if not texts:
        raise EncoderError("no texts given: pruning to an empty corpus would keep nothing")
    encodings = tok.encode_batch(corpus)
    used = {i for enc in encodings for i in enc.ids}
    if model["type"] == "Unigram":
        pieces = model["vocab"]
        old_size = len(pieces)
        used.add(model["unk_id"])
        # Keep the lowest-scoring piece: the unk penalty is (min score - 10), so it must not move.
        used.add(int(np.argmin([s for _, s in pieces])))
        if keep_chars:
            used |= {i for i, (p, _) in enumerate(pieces) if len(p.lstrip("\u2581")) <= 1}
        if keep_top:
            used |= {int(i) for i in np.argsort([-score for _, score in pieces], kind="stable")[:keep_top]}
    else:
        old_size = len(model["vocab"])
        used.add(model["vocab"][model["unk_token"]])
        if keep_chars:
            used |= {i for p, i in model["vocab"].items() if len(p.removeprefix("##")) <= 1}
        if keep_top:
            used |= {i for i in model["vocab"].values() if i < keep_top}
    if keep_special:
        used |= {a["id"] for a in tj.get("added_tokens", []) if a.get("special", True)}
    keep = sorted(used)
    new_id = {old: new for new, old in enumerate(keep)}

    if model["type"] == "Unigram":
        model["vocab"] = [pieces[i] for i in keep]
        model["unk_id"] = new_id[model["unk_id"]]
    else:
        by_id = {i: p for p, i in model["vocab"].items()}
        model["vocab"] = {by_id[i]: new_id[i] for i in keep}
    tj["added_tokens"] = [dict(a, id=new_id[a["id"]]) for a in tj.get("added_tokens", []) if a["id"] in new_id]
    _remap_post_processor(tj.get("post_processor"), new_id)
    if tj.get("padding") and tj["padding"].get("pad_id") in new_id:
        tj["padding"]["pad_id"] = new_id[tj["padding"]["pad_id"]]

    # Safety net: the pruned tokenizer must reproduce the corpus' tokenization exactly.
    new_tok = Tokenizer.from_str(json.dumps(tj))
    new_tok.no_padding()
    new_tok.no_truncation()
    for enc, new in zip(encodings, new_tok.encode_batch(corpus)):
        if new.ids != [new_id[i] for i in enc.ids]:
            raise EncoderError("pruned tokenizer segments a corpus text differently; please report this", path=path)
    return tj, keep, new_id, old_size


def prune_rows(tensors: dict, config: dict, keep: list[int], new_id: dict[int, int],
               path: str | Path | None = None) -> None:
    """Keep only the ``keep`` rows of every vocabulary-sized tensor (in place), and renumber the
    encoder config's ``vocab_size`` and special-token ids (in place)."""
    vocab_rows = config.get("vocab_size")
    if vocab_rows is None or keep[-1] >= vocab_rows:
        raise EncoderError(f"tokenizer id {keep[-1]} exceeds the model's vocab_size {vocab_rows}", path=path)
    rows = np.asarray(keep)
    for name, arr in tensors.items():
        if name.endswith(_VOCAB_TENSOR_SUFFIXES) and arr.shape[0] == vocab_rows:
            tensors[name] = arr[rows].contiguous() if hasattr(arr, "contiguous") else np.ascontiguousarray(arr[rows])
    config["vocab_size"] = len(keep)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id",
                "decoder_start_token_id"):
        if isinstance(config.get(key), int):
            config[key] = new_id.get(config[key])


def remap_tokenizer_config(tc: dict, new_id: dict[int, int]) -> dict:
    """transformers' tokenizer_config.json keys added tokens by id: renumber them."""
    if "added_tokens_decoder" in tc:
        tc["added_tokens_decoder"] = {str(new_id[int(k)]): v for k, v in tc["added_tokens_decoder"].items()
                                      if int(k) in new_id}
    return tc


def prune_vocab(model_dir: str | Path, texts: Iterable[str], out_dir: str | Path,
                keep_special: bool = True, prefixes: Iterable[str] = (), overwrite: bool = False) -> Path:
    """Write a copy of ``model_dir`` whose vocabulary holds only the tokens ``texts`` use.

    Every text of the corpus tokenizes to the same pieces as before (with renumbered ids) and
    therefore gets identical hidden states; other texts may split into smaller pieces or
    ``<unk>``. Supports Unigram (sentencepiece / XLM-R) and WordPiece (BERT) ``tokenizer.json``.

    Parameters
    ----------
    model_dir : str or Path
        A transformers folder with ``tokenizer.json``, ``config.json`` and ``model.safetensors``.
    texts : iterable of str
        The corpus. Include everything the model will see.
    out_dir : str or Path
        Destination, written atomically (temp folder beside it, then renamed).
    keep_special : bool
        Keep all special/added tokens (pad, mask, ...) even if the corpus never produces them.
    prefixes : iterable of str
        Prompt prefixes the texts will be encoded with (e.g. ``"query: "`` for e5); each
        ``prefix + text`` is tokenized too.
    overwrite : bool
        Replace an existing ``out_dir``.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    EncoderError
        Missing files, an unsupported tokenizer model, or an existing ``out_dir``.
    """

    src, out_dir = Path(model_dir), Path(out_dir)
    for name in ("tokenizer.json", "config.json", "model.safetensors"):
        if not (src / name).is_file():
            raise EncoderError(f"{name} not found; pruning needs a transformers folder with a single model.safetensors",
                            path=src)
    if out_dir.resolve() == src.resolve():
        raise EncoderError("output folder must differ from the model folder", path=out_dir)
    if out_dir.exists() and not overwrite:
        raise EncoderError("output folder already exists (use overwrite / --force)", path=out_dir)

    texts, prefixes = list(texts), list(prefixes)
    tj = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tj, keep, new_id, old_size = prune_tokenizer_json(tj, texts, prefixes, keep_special, path=src)
    model = tj["model"]
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    config.setdefault("vocab_size", old_size)
    tensors = load_file(str(src / "model.safetensors"))
    prune_rows(tensors, config, keep, new_id, path=src)
    with atomic_dir(out_dir) as tmp:
        os.chmod(tmp, 0o755)
        for item in src.iterdir():
            if item.name in _STALE or item.name in ("model.safetensors", "tokenizer.json", "config.json",
                                                    "vocab.txt", "hmtc_encoder.json"):
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if model["type"] == "WordPiece" and (src / "vocab.txt").exists():
            (tmp / "vocab.txt").write_text("".join(p + "\n" for p in model["vocab"]), encoding="utf-8")
        tc_path = tmp / "tokenizer_config.json"
        if tc_path.exists():
            tc = remap_tokenizer_config(json.loads(tc_path.read_text(encoding="utf-8")), new_id)
            tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "hmtc_prune.json").write_text(json.dumps(
            {"source": str(src.resolve()), "vocab_before": old_size, "vocab_after": len(keep),
             "texts": len(texts), "prefixes": prefixes, "keep_special": keep_special}, indent=2) + "\n")
        for f in tmp.iterdir():
            if f.is_file():
                os.chmod(f, 0o644)
    return out_dir
