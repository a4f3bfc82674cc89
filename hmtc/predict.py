"""Prediction from a checkpoint: texts in, consistent label sets with paths and scores out.

Input is read and written in chunks, so memory stays flat over a large JSONL file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .checkpoint import Checkpoint
from .decode import decode
from .errors import DataError


def read_texts(path: Path, text_key: str = "text") -> Iterator[str]:
    """Texts from a ``.jsonl`` file (``text_key``) or a plain file (one text per line)."""
    jsonl = path.suffix == ".jsonl"
    with open(path, "rb") as fh:
        for no, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(f"not UTF-8 (byte {e.start})", path, no) from None
            if not line.strip():
                continue
            if not jsonl:
                yield line
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON: {e.msg}", path, no) from None
            if not isinstance(obj, dict) or not isinstance(obj.get(text_key), str):
                raise DataError(f"expected an object with a string {text_key!r}", path, no)
            yield obj[text_key]


def predict_texts(ckpt: Checkpoint, texts: Iterable[str], chunk: int = 2048, batch_size: int | None = None,
                  bf16: bool | None = None) -> Iterator[dict]:
    """One result per text: ``labels`` (ids), ``paths`` (root-to-node display names for each
    deepest predicted node) and ``scores`` (sigmoid of the logit per predicted node)."""
    index, dec = ckpt.index, ckpt.decode
    method = dec.get("method", ckpt.config["decode"]["method"])
    thr = dec.get("per_label_thresholds") or dec.get("threshold", 0.0)
    thr = np.asarray(thr, dtype=np.float32)
    single = bool(dec.get("single_path", False))
    buf: list[str] = []

    def flush() -> Iterator[dict]:
        scores = ckpt.scores(buf, batch_size, bf16)
        keep = decode(scores, index, method, thr, single, bool(dec.get("at_least_one", False)),
                      bool(dec.get("complete", False)))
        probs = 1 / (1 + np.exp(-scores))
        has_kept_child = (sp.csr_array(keep) @ index.ancestors_csr).toarray()   # strict ancestors of kept
        for text, row, p, inner in zip(buf, keep, probs, has_kept_child):
            nodes = np.flatnonzero(row)
            paths = []
            for i in nodes[~inner[nodes]]:
                chain = np.flatnonzero(index.ancestors[i] & row)
                paths.append([index.names[j] for j in chain[np.argsort(index.levels[chain])]] + [index.names[i]])
            yield {"text": text, "labels": [index.ids[i] for i in nodes], "paths": paths,
                   "scores": {index.ids[i]: round(float(p[i]), 4) for i in nodes}}

    for text in texts:
        buf.append(text)
        if len(buf) >= chunk:
            yield from flush()
            buf = []
    if buf:
        yield from flush()
