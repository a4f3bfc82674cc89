"""Dataset statistics: sizes, labels per sample and per level, text lengths, long tail."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ..taxonomy import Taxonomy
from .catalog import Dataset, encode_labels
from .readers import Examples


def _summary(values: list[int] | np.ndarray) -> dict:
    v = np.asarray(values, dtype=float)
    if not len(v):
        return {"mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0}
    return {"mean": round(float(v.mean()), 1), "median": float(np.median(v)),
            "p95": round(float(np.percentile(v, 95)), 1), "max": int(v.max())}


def gini(counts: list[int] | np.ndarray) -> float:
    """Gini coefficient of label frequencies: 0 all equal, towards 1 all on one label."""
    x = np.sort(np.asarray(counts, dtype=float))
    if not len(x) or x.sum() == 0:
        return 0.0
    i = np.arange(1, len(x) + 1)
    return float(2 * (i * x).sum() / (len(x) * x.sum()) - (len(x) + 1) / len(x))


def long_tail(counts: np.ndarray, y: np.ndarray) -> dict:
    """Long-tail figures of per-label training frequencies.

    Parameters
    ----------
    counts : ndarray of int, shape (n_labels,)
        Samples per label; include labels with 0 samples.
    y : ndarray of bool, shape (n_samples, n_labels)
        The labels of each sample, same columns, to measure the share covered by the top labels.

    Returns
    -------
    dict
        ``labels``, ``min``/``median``/``max`` samples per label, ``under_10``/``under_50``
        (labels with fewer samples), ``top10pct_share`` (share of samples with a label among
        the most frequent 10% of labels) and ``gini``.
    """
    counts = np.asarray(counts, dtype=int)
    if not len(counts):
        return {"labels": 0}
    top = np.argsort(-counts, kind="stable")[: max(1, math.ceil(len(counts) / 10))]
    return {"labels": len(counts), "min": int(counts.min()), "median": float(np.median(counts)),
            "max": int(counts.max()), "under_10": int((counts < 10).sum()),
            "under_50": int((counts < 50).sum()),
            "top10pct_share": round(float(y[:, top].any(1).mean()), 4) if len(y) else 0.0,
            "gini": round(gini(counts), 4)}


def _split_stats(ex: Examples, train_texts: set[str] | None) -> dict:
    per_sample = Counter(len(labs) for labs in ex.labels)
    out = {"samples": len(ex), "skipped": ex.skipped,
           "skipped_reasons": dict(sorted(ex.skipped_reasons.items())),
           "labels_per_sample": {k: per_sample[k] for k in sorted(per_sample)},
           "label_instances": sum(len(labs) for labs in ex.labels),
           "distinct_labels": len({lab for labs in ex.labels for lab in labs}),
           "text_chars": _summary([len(t) for t in ex.texts]),
           "duplicate_texts": len(ex) - len(set(ex.texts))}
    if train_texts is not None:
        out["texts_also_in_train"] = sum(1 for t in set(ex.texts) if t in train_texts)
    return out


def dataset_stats(dataset: Dataset, taxonomy: Taxonomy | None = None,
                  on_error: str = "raise") -> dict:
    """Statistics of every split, JSON-able.

    Parameters
    ----------
    dataset : Dataset
    taxonomy : Taxonomy, optional
        Adds per-level figures (nodes present, label instances after closure, samples on
        more than one level-1 branch) and computes the long tail over its leaves.
    on_error : {"raise", "skip"}
        For labels not in the taxonomy (see :func:`encode_labels`).

    Returns
    -------
    dict
        ``{"name", "splits": {split: {...}}, "taxonomy": {...} or None, "long_tail": {...}}``;
        the long tail is measured on the train split (the first split when there is none).
    """
    index = taxonomy.compile() if taxonomy is not None else None
    train_name = "train" if "train" in dataset.splits else next(iter(dataset.splits), None)
    train_texts = set(dataset.splits[train_name].texts) if train_name else None
    splits, ys = {}, {}
    for name, ex in dataset.splits.items():
        s = _split_stats(ex, train_texts if name != train_name else None)
        if index is not None:
            before = ex.skipped_reasons["unknown label"]
            y = ys[name] = encode_labels(ex, index, on_error)
            s["unknown_labels"] = ex.skipped_reasons["unknown label"] - before
            s["levels"] = [{"level": k + 1, "nodes": sl.stop - sl.start,
                            "present": int(y[:, sl].any(axis=0).sum()),
                            "instances": int(y[:, sl].sum())}
                           for k, sl in enumerate(index.level_slices)]
            s["multi_branch_samples"] = int((y[:, index.level_slices[0]].sum(axis=1) > 1).sum()) \
                if index.level_slices else 0
        splits[name] = s
    out = {"name": dataset.name, "splits": splits, "taxonomy": None, "long_tail": None}
    if index is not None:
        st = taxonomy.stats()
        out["taxonomy"] = {"path": str(taxonomy.path) if taxonomy.path else None,
                           "nodes": st["nodes"], "leaves": st["leaves"],
                           "per_level": st["per_level"], "depth": st["depth"]}
    if train_name:
        ex = dataset.splits[train_name]
        if index is not None:
            y = ys[train_name][:, index.leaf_mask]
        else:                       # no taxonomy: the raw labels, in order of first appearance
            column = {lab: j for j, lab in enumerate(dict.fromkeys(l for labs in ex.labels for l in labs))}
            y = np.zeros((len(ex), len(column)), dtype=bool)
            rows = [r for r, labs in enumerate(ex.labels) for _ in labs]
            y[rows, [column[l] for labs in ex.labels for l in labs]] = True
        out["long_tail"] = {"split": train_name, **long_tail(y.sum(0), y)}
    return out
