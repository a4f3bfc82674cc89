"""Prediction from a checkpoint: texts in, consistent label sets with paths and scores out.

Input is read and written in chunks, so memory stays flat over a large JSONL file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .calibration import calibrated, consistent
from .checkpoint import Checkpoint
from .decode import unsure
from .errors import DataError, HmtcError
from .label_classes import LabelClasses, class_indices, label_classes


def decoded_lines(fh: BinaryIO, source: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a byte stream, decoded as UTF-8 without its line end
    and without a byte-order mark at the start; a line that is not UTF-8 is a DataError naming
    ``source`` and the line."""
    for no, raw in enumerate(fh, 1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise DataError(f"not UTF-8 (byte {e.start})", source, no) from None
        yield no, (line.removeprefix("\ufeff") if no == 1 else line)


def count_lines(path: Path) -> int:
    """Lines in a file as :func:`decoded_lines` reads them (for a progress bar's total)."""
    n, last = 0, b"\n"
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            n, last = n + block.count(b"\n"), block[-1:]
    return n + (last != b"\n")


def read_texts(path: Path, text_key: str = "text", keep: Sequence[str] = ("id",)) -> Iterator[dict]:
    """One item per line of a ``.jsonl`` file (``text_key``) or a plain file (the line is the
    text): ``{"text": ...}`` plus the ``keep`` fields a JSON line has. A blank line is an item
    with an empty text, so outputs stay aligned with inputs line for line."""
    jsonl = path.suffix == ".jsonl"
    with open(path, "rb") as fh:
        for no, line in decoded_lines(fh, path):
            if not jsonl or not line.strip():
                yield {"text": line}
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON: {e.msg}", path, no) from None
            except RecursionError:           # json recurses per level of nesting
                raise DataError("invalid JSON: nested too deeply", path, no) from None
            if not isinstance(obj, dict) or not isinstance(obj.get(text_key), str):
                raise DataError(f"expected an object with a string {text_key!r}", path, no)
            yield {**{k: obj[k] for k in keep if k in obj}, "text": obj[text_key]}


def predict_rows(ckpt: Checkpoint, items: list[str | dict], batch_size: int | None = None,
                 bf16: bool | None = None, leaf: bool = False,
                 back_off: bool | None = None) -> tuple[list[dict], list[np.ndarray | None]]:
    """Results for one chunk of items, and each item's node probabilities (None when not scored).

    Each result holds the item's fields (an item may be a dict: ``text`` plus fields to copy, e.g.
    ``id``), ``labels`` (ids), ``paths`` (root-to-node display names of each deepest predicted node),
    ``scores`` (the probability of each predicted node: σ(z / T_level) with the checkpoint's
    calibration temperatures, :mod:`hmtc.calibration`) and ``unsure``: the predicted nodes whose
    logit is not above their tuned threshold, kept only because decoding forces an answer
    (``at_least_one``, ``complete``, ``leaf``): a guess, not a detection. ``back_off`` (None: the
    run's ``decode.back_off``) drops them, so each answer stops at its deepest sure node
    (:func:`hmtc.decode.backed_off`); ``leaf`` wins over it. An empty or blank text
    gets an empty result with the reason in ``empty``, without being scored. ``leaf`` forces every prediction
    down to a leaf, the best child at each step (and a path for a text with none).

    A taxonomy with labels that carry classes (``docs/label-classes.md``) adds ``classes``:
    ``{label: {"class": c, "score": p_c, "probs": {class: p}}}`` for every such label, ``c`` the
    class the decoded set keeps (the label's first class where it keeps none: an absent label is
    "none") and ``p`` the label's softmax over its classes (:func:`class_probabilities`, the
    distribution its group loss trains, from path logits where the model scores them); ``{}``
    for an empty text.
    """
    index, dec = ckpt.index, ckpt.decoding
    lc = label_classes(index)
    items = [item if isinstance(item, dict) else {"text": item} for item in items]
    scored = [item for item in items if item["text"].strip()]
    probs: list[np.ndarray | None] = [None] * len(items)
    rows = [{**item, "labels": [], "paths": [], "scores": {}, "unsure": [], **({"classes": {}} if len(lc) else {}),
             "empty": "empty text" if not item["text"] else "blank text"} for item in items]
    if not scored:
        return rows, probs
    scores = ckpt.scores([item["text"] for item in scored], batch_size, bf16)
    keep, thr = decode_checkpoint(ckpt, scores, leaf, back_off)
    below = unsure(keep, scores, thr, index)
    p = consistent(calibrated(scores, dec.temperatures, index), index, consistent_choice(ckpt))
    cls = class_indices(keep, lc) if len(lc) else None
    assert cls is None or (cls >= 0).all(), "decoding keeps at most one class of a label"
    softmax = checkpoint_class_probabilities(ckpt, scores, lc) if len(lc) else None
    at = iter(range(len(scored)))
    for i, item in enumerate(items):
        if item["text"].strip():
            r = next(at)
            rows[i], probs[i] = {**item, **_result(index, keep[r], p[r], below[r]), **_classes(lc, cls, softmax, r)}, p[r]
    return rows, probs


def decode_checkpoint(ckpt: Checkpoint, scores: np.ndarray, leaf: bool = False,
                      back_off: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(kept nodes (S, N), thresholds) of ``scores`` decoded as the checkpoint's decode.json says,
    ``leaf`` forcing complete paths and ``back_off`` (None: the run's) dropping guesses."""
    dec = ckpt.decoding
    return dec.apply(scores, ckpt.index, leaf, back_off), np.asarray(dec.thresholds, dtype=np.float32)


def consistent_choice(ckpt: Checkpoint) -> str:
    """The run's ``decode.consistent_scores``."""
    return ckpt.config.decode.consistent_scores


def class_probabilities(scores: np.ndarray, lc: LabelClasses, paths: bool = False) -> np.ndarray:
    """Each label's distribution over its classes: the softmax of its class logits,

        p(c | text) = exp(z_c) / Σ_{c' ∈ C_l} exp(z_c')        for the classes C_l of label l,

    the distribution the exclusive group loss trains (``docs/label-classes.md``). With ``paths``
    the scores are path logits s (:mod:`hmtc.models.paths`: local, conditional MSML), and a
    class's own logit, the one the group loss trains, is recovered from its one parent, the label:

        σ(z_c) = p(c) / p(l) = exp(log σ(s_c) − log σ(s_l)),    z_c = log σ(z_c) − log(1 − σ(z_c))

    For models without the group loss (tfidf, an ensemble's sum) it is the softmax of their scores.

    Parameters
    ----------
    scores : ndarray of shape (n_samples, n_nodes)
        Logits in the label index's column order.
    lc : LabelClasses
    paths : bool, default False
        Whether ``scores`` are path logits (``Model.path_scores``).

    Returns
    -------
    ndarray of float32, shape (n_samples, L, K)
        ``[i, l, k]``: the probability of label l's class k for text i (the taxonomy's child order);
        0 past label l's own K_l classes, so each label's row sums to 1.
    """
    cols = lc.class_cols
    s = np.asarray(scores, dtype=np.float64)
    z = s[:, np.maximum(cols, 0)]                                        # (S, L, K)
    if paths:
        log_sig = lambda x: -np.logaddexp(0.0, -x)                       # log σ(x), stable
        # p(c) ≤ p(l) up to float32 rounding of the path product: keep log σ(z_c) below 0
        q = np.minimum(log_sig(z) - log_sig(s[:, lc.label_cols])[:, :, None], -1e-12)
        z = q - np.log(-np.expm1(q))
    z = np.where(cols >= 0, z, -np.inf)
    e = np.exp(z - z.max(axis=2, keepdims=True))
    return (e / e.sum(axis=2, keepdims=True)).astype(np.float32)


def checkpoint_class_probabilities(ckpt: Checkpoint, scores: np.ndarray, lc: LabelClasses) -> np.ndarray:
    """:func:`class_probabilities` of ``ckpt``'s scores, read as path logits where its model scores them."""
    return class_probabilities(scores, lc, ckpt.path_scores)


def _classes(lc: LabelClasses, cls: np.ndarray | None, softmax: np.ndarray | None, r: int) -> dict:
    """``classes`` of decoded row ``r``, from the chunk's :func:`class_indices` ``cls`` and
    :func:`class_probabilities` ``softmax`` (None without labels with classes: the row stays as it was)."""
    if cls is None:
        return {}
    out = {}
    for l, (lab, names, c) in enumerate(zip(lc.labels, lc.classes, cls[r].tolist())):
        probs = {name: round(float(v), 4) for name, v in zip(names, softmax[r, l])}
        out[lab] = {"class": names[c], "score": probs[names[c]], "probs": probs}
    return {"classes": out}


def ranked(index, probs: np.ndarray | None, top_k: int = 0, all_scores: bool = False) -> dict:
    """``top_k``: the k most probable nodes of each level; ``all_scores``: every node's probability."""
    out: dict = {}
    if top_k:
        out["top_k"] = [] if probs is None else [
            {"level": lv + 1, "nodes": [{"id": index.ids[j], "name": index.names[j], "score": round(float(probs[j]), 4)}
                                        for j in sl.start + np.argsort(-probs[sl], kind="stable")[:top_k]]}
            for lv, sl in enumerate(index.level_slices)]
    if all_scores:
        out["all_scores"] = {} if probs is None else {n: round(float(v), 4) for n, v in zip(index.ids, probs)}
    return out


def predict_texts(ckpt: Checkpoint, texts: Iterable[str | dict], chunk: int = 2048, batch_size: int | None = None,
                  bf16: bool | None = None, top_k: int = 0, all_scores: bool = False,
                  leaf: bool = False, back_off: bool | None = None) -> Iterator[dict]:
    """One result per text, in order (:func:`predict_rows`), ``chunk`` texts in memory at a time;
    with ``top_k`` / ``all_scores`` also what :func:`ranked` gives."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise HmtcError(f"chunk must be a whole number of texts, at least 1, not {chunk!r}")
    buf: list = []

    def flush() -> Iterator[dict]:
        rows, probs = predict_rows(ckpt, buf, batch_size, bf16, leaf, back_off)
        for row, p in zip(rows, probs):
            yield {**row, **ranked(ckpt.index, p, top_k, all_scores)}

    for item in texts:
        buf.append(item)
        if len(buf) >= chunk:
            yield from flush()
            buf = []
    if buf:
        yield from flush()


def deepest_paths(index, row: np.ndarray) -> list[list[int]]:
    """The columns of each deepest kept node's path (its kept ancestors by level, then itself)
    in one decoded row."""
    nodes = np.flatnonzero(row)
    inner = index.ancestors[nodes].any(0)          # nodes with a kept descendant
    paths = []
    for i in nodes[~inner[nodes]]:
        chain = np.flatnonzero(index.ancestors[i] & row)
        paths.append([*chain[np.argsort(index.levels[chain])].tolist(), int(i)])
    return paths


def _result(index, row: np.ndarray, probs: np.ndarray, below: np.ndarray) -> dict:
    nodes = np.flatnonzero(row)
    paths = [[index.names[j] for j in path] for path in deepest_paths(index, row)]
    return {"labels": [index.ids[i] for i in nodes], "paths": paths,
            "scores": {index.ids[i]: round(float(probs[i]), 4) for i in nodes},
            "unsure": [index.ids[i] for i in np.flatnonzero(below)]}
