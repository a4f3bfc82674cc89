"""Prediction from a checkpoint: texts in, consistent label sets with paths and scores out.

Input is read and written in chunks, so memory stays flat over a large JSONL file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint
from .decode import decode
from .errors import DataError


def read_texts(path: Path, text_key: str = "text", keep: Sequence[str] = ("id",)) -> Iterator[dict]:
    """One item per line of a ``.jsonl`` file (``text_key``) or a plain file (the line is the
    text): ``{"text": ...}`` plus the ``keep`` fields a JSON line has. A blank line is an item
    with an empty text, so outputs stay aligned with inputs line for line."""
    jsonl = path.suffix == ".jsonl"
    with open(path, "rb") as fh:
        for no, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(f"not UTF-8 (byte {e.start})", path, no) from None
            if not jsonl or not line.strip():
                yield {"text": line}
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON: {e.msg}", path, no) from None
            if not isinstance(obj, dict) or not isinstance(obj.get(text_key), str):
                raise DataError(f"expected an object with a string {text_key!r}", path, no)
            yield {**{k: obj[k] for k in keep if k in obj}, "text": obj[text_key]}


def predict_texts(ckpt: Checkpoint, texts: Iterable[str | dict], chunk: int = 2048, batch_size: int | None = None,
                  bf16: bool | None = None) -> Iterator[dict]:
    """One result per text, in order: ``labels`` (ids), ``paths`` (root-to-node display names for
    each deepest predicted node) and ``scores`` (sigmoid of the logit per predicted node). An item
    may be a dict (``text`` plus fields copied to its result, e.g. ``id``); an empty or blank text
    gets an empty result with the reason in ``empty``, without being scored."""
    index, dec = ckpt.index, ckpt.decode
    method = dec.get("method", ckpt.config["decode"]["method"])
    thr = dec.get("per_label_thresholds") or dec.get("threshold", 0.0)
    thr = np.asarray(thr, dtype=np.float32)
    single = bool(dec.get("single_path", False))
    buf: list[dict] = []

    def flush() -> Iterator[dict]:
        scored = [item for item in buf if item["text"].strip()]
        scores = ckpt.scores([item["text"] for item in scored], batch_size, bf16) if scored else None
        keep = decode(scores, index, method, thr, single, bool(dec.get("at_least_one", False)),
                      bool(dec.get("complete", False))) if scored else None
        rows = iter(range(len(scored)))
        for item in buf:
            if not item["text"].strip():
                yield {**item, "labels": [], "paths": [], "scores": {},
                       "empty": "empty text" if not item["text"] else "blank text"}
                continue
            r = next(rows)
            yield {**item, **_result(index, keep[r], 1 / (1 + np.exp(-scores[r])))}

    for item in texts:
        buf.append(item if isinstance(item, dict) else {"text": item})
        if len(buf) >= chunk:
            yield from flush()
            buf = []
    if buf:
        yield from flush()


def _result(index, row: np.ndarray, probs: np.ndarray) -> dict:
    nodes = np.flatnonzero(row)
    inner = index.ancestors[nodes].any(0)          # nodes with a kept descendant
    paths = []
    for i in nodes[~inner[nodes]]:
        chain = np.flatnonzero(index.ancestors[i] & row)
        paths.append([index.names[j] for j in chain[np.argsort(index.levels[chain])]] + [index.names[i]])
    return {"labels": [index.ids[i] for i in nodes], "paths": paths,
            "scores": {index.ids[i]: round(float(probs[i]), 4) for i in nodes}}
