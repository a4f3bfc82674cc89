"""Evaluation metrics for hierarchical multi-label classification.

Every function takes indicator matrices (samples x nodes, columns in the order of
``TaxonomyIndex.ids``), dense (bool or 0/1 int; any non-zero is a positive) or scipy sparse,
converts them once to canonical boolean CSR and works on the stored entries with
``bincount``, sparse products and sorted-key look-ups, so the cost grows with the number of
positives, not with samples x nodes. The definitions are written out in ``docs/metrics.md``.

Conventions
-----------
* ``zero_division`` (default 0.0, as sklearn's): the value of any ratio whose denominator is
  zero; with ``np.nan`` such values are left out of averages. Macro averages run over every
  label of the set, so with the default a label never in the gold data counts F1 = 0 (or
  ``zero_division`` if it is never predicted either).
* The root is not a column and never counts; level-1 nodes have no parent in the index.
* DAG consistency: ``"strict"`` needs every parent of a predicted node predicted,
  ``"lenient"`` at least one.
* Nothing here closes the gold labels under ancestors; the CLI does (``augment_ancestors``).
* Per-label classes (``docs/label-classes.md``): a label whose classes the taxonomy holds as an
  exclusive group of ``label:class`` leaves under it (:func:`label_classes`). In any label set,
  gold or predicted, such a label is in the class it keeps, and in its first class (index 0, the
  taxonomy's first child) when it keeps none: an absent label means "none" / intensity 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .indicator import Indicator, as_csr
from .label_classes import LabelClasses, class_indices, label_classes
from .taxonomy import TaxonomyIndex

__all__ = [
    "as_csr", "augment_ancestors", "orphan_mask", "precision_recall_f1", "per_level_scores",
    "hierarchical_prf", "constrained_f1", "consistency", "exact_match", "hamming_loss",
    "jaccard_samples", "multilabel_confusion_matrix", "evaluate", "label_class_scores",
]

DAG_MODES = ("strict", "lenient")


def _pair(y_true: Indicator, y_pred: Indicator,
          index: TaxonomyIndex | None = None) -> tuple[sp.csr_array, sp.csr_array]:
    n = None if index is None else index.n_nodes
    t, p = as_csr(y_true, n), as_csr(y_pred, n)
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape}, y_pred {p.shape}")
    if t.shape[0] == 0:
        raise ValueError("no samples to score")
    return t, p


def _ancestor_csr(index: TaxonomyIndex) -> sp.csr_array:
    return index.ancestors_csr


def _like(m: sp.csr_array, y: Indicator) -> Indicator:
    """Return ``m`` in the kind of ``y``: sparse stays CSR, dense becomes a bool ndarray."""
    return m if sp.issparse(y) else m.toarray()


def _present(m: sp.csr_array, ptr: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each stored entry (i, j) of ``m``: how many of j's related nodes
    ``idx[ptr[j]:ptr[j+1]]`` are stored in row i too, and how many related nodes j has."""
    if not m.has_canonical_format:
        m = m.copy()
        m.sum_duplicates()
    n_cols = m.shape[1]
    cols = m.indices.astype(np.int64)
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    keys = rows * n_cols + cols               # ascending: canonical CSR is row-major, sorted
    k = np.diff(ptr)[cols]
    if not k.sum():
        return np.zeros(len(cols), dtype=np.int64), k
    # Gather every (entry, related node) pair without a Python loop.
    first = np.cumsum(k) - k
    pos = np.arange(k.sum()) + np.repeat(ptr[cols] - first, k)
    query = np.repeat(rows, k) * n_cols + idx[pos]
    hit = keys[np.minimum(np.searchsorted(keys, query), len(keys) - 1)] == query
    entry = np.repeat(np.arange(len(cols)), k)
    return np.bincount(entry[hit], minlength=len(cols)), k


def augment_ancestors(y: Indicator, index: TaxonomyIndex) -> Indicator:
    """Add every ancestor (root excluded) of each positive node.

    Parameters
    ----------
    y : array-like or sparse matrix of shape (n_samples, n_nodes)
        Indicator matrix.
    index : TaxonomyIndex
        The compiled taxonomy.

    Returns
    -------
    augmented : ndarray of bool or scipy.sparse.csr_array of bool
        ``y`` OR ``y @ ancestors``; sparse in, canonical CSR out; dense in, dense out.
    """
    y = y if sp.issparse(y) else np.asarray(y) != 0
    if y.ndim != 2 or y.shape[1] != index.n_nodes:
        raise ValueError(f"indicator matrix has shape {y.shape}, the taxonomy {index.n_nodes} nodes")
    return index.closure(y)


def _check_dag_mode(dag_mode: str) -> None:
    if dag_mode not in DAG_MODES:
        raise ValueError(f"dag_mode must be one of {DAG_MODES}, got {dag_mode!r}")


def _orphan_entries(p: sp.csr_array, index: TaxonomyIndex, dag_mode: str) -> np.ndarray:
    _check_dag_mode(dag_mode)
    found, n_par = _present(p, index.parent_ptr, index.parent_idx)
    missing = found < n_par if dag_mode == "strict" else found == 0
    return missing & (n_par > 0)              # level-1 nodes are never orphans


def orphan_mask(y_pred: Indicator, index: TaxonomyIndex, dag_mode: str = "strict") -> Indicator:
    """Mark the predicted nodes whose parent is not predicted.

    Parameters
    ----------
    y_pred : array-like or sparse matrix of shape (n_samples, n_nodes)
        Predicted indicator matrix.
    index : TaxonomyIndex
        The compiled taxonomy.
    dag_mode : {"strict", "lenient"}, default="strict"
        For nodes with several parents: ``"strict"`` makes a node an orphan when any parent
        is missing, ``"lenient"`` only when all are. Same result on a tree.

    Returns
    -------
    mask : ndarray of bool or scipy.sparse.csr_array of bool
        True at orphaned predicted nodes; level-1 nodes are never orphans. Sparse in, CSR
        out; dense in, dense out.
    """
    p = as_csr(y_pred, index.n_nodes)
    out = sp.csr_array((_orphan_entries(p, index, dag_mode), p.indices, p.indptr), shape=p.shape)
    out.eliminate_zeros()
    return _like(out, y_pred)


# ---- counts ---------------------------------------------------------------------------------
class _Counts(NamedTuple):
    inter: sp.csr_array    # gold AND predicted
    tp: np.ndarray         # per label
    true: np.ndarray
    pred: np.ndarray
    tp_s: np.ndarray       # per sample
    true_s: np.ndarray
    pred_s: np.ndarray


def _counts(t: sp.csr_array, p: sp.csr_array) -> _Counts:
    inter = t.multiply(p)
    n_cols = t.shape[1]

    def per_label(m):
        return np.bincount(m.indices, minlength=n_cols)

    return _Counts(inter, per_label(inter), per_label(t), per_label(p),
                   np.diff(inter.indptr), np.diff(t.indptr), np.diff(p.indptr))


def _div(num, den, zero_division: float) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, float(zero_division))
    np.divide(num, den, out=out, where=den > 0)
    return out


def _mean(x: np.ndarray) -> float:
    """Mean leaving out NaN (sklearn's ``_nanaverage``); NaN when nothing is left."""
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


def _prf(tp, true, pred, zero_division: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 = 2tp / (|gold| + |pred|) (sklearn's form of the harmonic mean)."""
    return (_div(tp, pred, zero_division), _div(tp, true, zero_division),
            _div(2 * np.asarray(tp), np.asarray(true) + np.asarray(pred), zero_division))


def _micro(tp, true, pred, zero_division: float) -> tuple[float, float, float]:
    return tuple(float(v) for v in _prf(np.sum(tp), np.sum(true), np.sum(pred), zero_division))


def _macro(tp, true, pred, zero_division: float) -> tuple[float, float, float]:
    return tuple(_mean(v) for v in _prf(tp, true, pred, zero_division))


def _select(c: _Counts, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sel = slice(None) if labels is None else labels
    return c.tp[sel], c.true[sel], c.pred[sel]


# ---- flat scores ----------------------------------------------------------------------------
def precision_recall_f1(y_true: Indicator, y_pred: Indicator, *, average: str | None = "micro",
                        labels=None, zero_division: float = 0.0):
    """Precision, recall and F1, as sklearn's ``precision_recall_fscore_support``.

    Parameters
    ----------
    y_true, y_pred : array-like or sparse matrix of shape (n_samples, n_labels)
        Gold and predicted indicator matrices.
    average : {"micro", "macro", "samples"} or None, default="micro"
        ``"micro"``: pool the counts of all selected labels. ``"macro"``: unweighted mean of
        the per-label scores over every selected label, zero-support ones included.
        ``"samples"``: mean of the per-sample scores (all columns; ``labels`` must be None).
        None: per-label arrays.
    labels : slice, array of int or bool mask, optional
        Columns to score (e.g. ``index.level_slices[k]`` or ``index.leaf_mask``); all if None.
    zero_division : float, default=0.0
        Value of a ratio with a zero denominator; ``np.nan`` leaves it out of averages.

    Returns
    -------
    precision, recall, f1 : float, or ndarray of shape (n_selected,) when ``average=None``
    support : ndarray of int, shape (n_selected,)
        Gold count of each label; returned only when ``average=None``.
    """
    c = _counts(*_pair(y_true, y_pred))
    if average == "samples":
        if labels is not None:
            raise ValueError("average='samples' scores whole rows; labels must be None")
        return tuple(_mean(v) for v in _prf(c.tp_s, c.true_s, c.pred_s, zero_division))
    tp, true, pred = _select(c, labels)
    if average is None:
        return (*_prf(tp, true, pred, zero_division), true)
    if average == "micro":
        return _micro(tp, true, pred, zero_division)
    if average == "macro":
        return _macro(tp, true, pred, zero_division)
    raise ValueError(f"average must be 'micro', 'macro', 'samples' or None, got {average!r}")


def _level_rows(c: _Counts, index: TaxonomyIndex, zero_division: float) -> list[dict]:
    rows = []
    for k, sl in enumerate(index.level_slices, 1):
        tp, true, pred = _select(c, sl)
        mi, ma = _micro(tp, true, pred, zero_division), _macro(tp, true, pred, zero_division)
        rows.append({"level": k, "n_labels": sl.stop - sl.start,
                     "micro_precision": mi[0], "micro_recall": mi[1], "micro_f1": mi[2],
                     "macro_precision": ma[0], "macro_recall": ma[1], "macro_f1": ma[2],
                     "support": int(true.sum()), "predicted": int(pred.sum())})
    return rows


def per_level_scores(y_true: Indicator, y_pred: Indicator, index: TaxonomyIndex, *,
                     zero_division: float = 0.0) -> list[dict]:
    """Micro and macro precision/recall/F1 restricted to each level's columns.

    Parameters
    ----------
    y_true, y_pred : array-like or sparse matrix of shape (n_samples, n_nodes)
        Gold and predicted indicator matrices.
    index : TaxonomyIndex
        The compiled taxonomy; level k is ``index.level_slices[k - 1]``.
    zero_division : float, default=0.0
        See :func:`precision_recall_f1`.

    Returns
    -------
    levels : list of dict
        One per level: ``level``, ``n_labels``, ``micro_precision``, ``micro_recall``,
        ``micro_f1``, ``macro_precision``, ``macro_recall``, ``macro_f1``, ``support`` (gold
        positives at that level) and ``predicted`` (predicted positives).
    """
    return _level_rows(_counts(*_pair(y_true, y_pred, index)), index, zero_division)


def exact_match(y_true: Indicator, y_pred: Indicator) -> float:
    """Subset accuracy: the share of samples whose predicted set equals the gold set.

    Parameters
    ----------
    y_true, y_pred : array-like or sparse matrix of shape (n_samples, n_labels)

    Returns
    -------
    score : float
    """
    c = _counts(*_pair(y_true, y_pred))
    return _exact(c)


def _exact(c: _Counts) -> float:
    return float(np.mean((c.tp_s == c.true_s) & (c.tp_s == c.pred_s)))


def hamming_loss(y_true: Indicator, y_pred: Indicator) -> float:
    """Share of (sample, label) cells where gold and prediction differ.

    Parameters
    ----------
    y_true, y_pred : array-like or sparse matrix of shape (n_samples, n_labels)

    Returns
    -------
    loss : float
        ``(|gold| + |pred| - 2 |gold AND pred|) / (n_samples * n_labels)``; 1 minus it is
        one of the two meanings of "hamming score".
    """
    t, p = _pair(y_true, y_pred)
    return _hamming(_counts(t, p), t.shape)


def _hamming(c: _Counts, shape: tuple[int, int]) -> float:
    wrong = c.true.sum() + c.pred.sum() - 2 * c.tp.sum()
    return float(_div(wrong, shape[0] * shape[1], 0.0))


def jaccard_samples(y_true: Indicator, y_pred: Indicator, *, zero_division: float = 0.0) -> float:
    """Mean per-sample Jaccard index |gold AND pred| / |gold OR pred|.

    The other meaning of "hamming score"; equals sklearn's
    ``jaccard_score(average="samples")``.

    Parameters
    ----------
    y_true, y_pred : array-like or sparse matrix of shape (n_samples, n_labels)
    zero_division : float, default=0.0
        Score of a sample with empty gold and predicted sets.

    Returns
    -------
    score : float
    """
    return _jaccard(_counts(*_pair(y_true, y_pred)), zero_division)


def _jaccard(c: _Counts, zero_division: float) -> float:
    return _mean(_div(c.tp_s, c.true_s + c.pred_s - c.tp_s, zero_division))


def multilabel_confusion_matrix(y_true: Indicator, y_pred: Indicator) -> np.ndarray:
    """Per-label 2 x 2 confusion matrices, laid out as sklearn's.

    Parameters
    ----------
    y_true, y_pred : array-like or sparse matrix of shape (n_samples, n_labels)

    Returns
    -------
    mcm : ndarray of int64, shape (n_labels, 2, 2)
        ``mcm[j] = [[tn, fp], [fn, tp]]`` for label ``j``.
    """
    t, p = _pair(y_true, y_pred)
    c = _counts(t, p)
    fp, fn = c.pred - c.tp, c.true - c.tp
    tn = t.shape[0] - c.tp - fp - fn
    return np.stack([tn, fp, fn, c.tp], axis=1).reshape(-1, 2, 2).astype(np.int64)


# ---- hierarchical scores --------------------------------------------------------------------
def _hier(t, p, index, zero_division) -> tuple[float, float, float]:
    anc = _ancestor_csr(index)
    ta, pa = t + t @ anc, p + p @ anc
    return _micro(ta.multiply(pa).nnz, ta.nnz, pa.nnz, zero_division)


def hierarchical_prf(y_true: Indicator, y_pred: Indicator, index: TaxonomyIndex, *,
                     zero_division: float = 0.0) -> tuple[float, float, float]:
    """Hierarchical precision, recall and F1 (Kiritchenko et al.).

    Both sets of every sample are augmented with all their ancestors (root excluded), then
    counted over all samples: ``hP = sum_i |T^_i & P^_i| / sum_i |P^_i|``,
    ``hR = sum_i |T^_i & P^_i| / sum_i |T^_i|``, ``hF = 2 hP hR / (hP + hR)``.

    Parameters
    ----------
    y_true, y_pred : array-like or sparse matrix of shape (n_samples, n_nodes)
    index : TaxonomyIndex
    zero_division : float, default=0.0

    Returns
    -------
    hier_precision, hier_recall, hier_f1 : float
    """
    t, p = _pair(y_true, y_pred, index)
    return _hier(t, p, index, zero_division)


def _constrained_tp(inter: sp.csr_array, index: TaxonomyIndex) -> np.ndarray:
    """Per-label count of samples where the node and all its ancestors are in gold and pred."""
    anc = _ancestor_csr(index)
    found, n_anc = _present(inter, anc.indptr.astype(np.int64), anc.indices.astype(np.int64))
    return np.bincount(inter.indices[found == n_anc], minlength=inter.shape[1])


def _cf1(c: _Counts, index: TaxonomyIndex, zero_division: float) -> dict:
    ctp = _constrained_tp(c.inter, index)
    p, r, f = _micro(ctp, c.true, c.pred, zero_division)
    return {"c_micro_precision": p, "c_micro_recall": r, "c_micro_f1": f,
            "c_macro_f1": _macro(ctp, c.true, c.pred, zero_division)[2]}


def constrained_f1(y_true: Indicator, y_pred: Indicator, index: TaxonomyIndex, *,
                   zero_division: float = 0.0) -> tuple[float, float]:
    """Path-constrained C-Micro-F1 and C-Macro-F1 (Seq2Tree, SIGIR 2022).

    A predicted node counts as a true positive only when it and every one of its ancestors
    are in both the gold and the predicted set of the sample; the scores are then micro- and
    macro-F1 with these true positives and the usual gold and predicted counts.

    Parameters
    ----------
    y_true, y_pred : array-like or sparse matrix of shape (n_samples, n_nodes)
    index : TaxonomyIndex
    zero_division : float, default=0.0

    Returns
    -------
    c_micro_f1, c_macro_f1 : float
    """
    d = _cf1(_counts(*_pair(y_true, y_pred, index)), index, zero_division)
    return d["c_micro_f1"], d["c_macro_f1"]


def _consistency(p: sp.csr_array, index: TaxonomyIndex, dag_mode: str) -> dict:
    orphan = _orphan_entries(p, index, dag_mode)
    rows = np.repeat(np.arange(p.shape[0]), np.diff(p.indptr))
    bad_rows = np.bincount(rows[orphan], minlength=p.shape[0]) > 0
    return {"inconsistent_samples": float(bad_rows.mean()) if p.shape[0] else 0.0,
            "orphan_nodes": float(_div(orphan.sum(), p.nnz, 0.0)),
            "n_inconsistent_samples": int(bad_rows.sum()), "n_orphan_nodes": int(orphan.sum()),
            "n_predicted_nodes": int(p.nnz)}


def consistency(y_pred: Indicator, index: TaxonomyIndex, *, dag_mode: str = "strict") -> dict:
    """How often predictions break the hierarchy.

    A predicted node is an orphan when its parent is not predicted (DAG: any parent for
    ``"strict"``, all parents for ``"lenient"``); level-1 nodes never are.

    Parameters
    ----------
    y_pred : array-like or sparse matrix of shape (n_samples, n_nodes)
    index : TaxonomyIndex
    dag_mode : {"strict", "lenient"}, default="strict"

    Returns
    -------
    result : dict
        ``inconsistent_samples`` (share of samples with at least one orphan),
        ``orphan_nodes`` (share of predicted nodes that are orphans; 0 when nothing is
        predicted), and the counts ``n_inconsistent_samples``, ``n_orphan_nodes``,
        ``n_predicted_nodes``.
    """
    return _consistency(as_csr(y_pred, index.n_nodes), index, dag_mode)


# ---- per-label classes ------------------------------------------------------------------------
def label_class_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes, *, ordinal=None,
                       zero_division: float = 0.0) -> dict:
    """Accuracy, macro-F1 over classes and, for ordinal classes, RMSE of the class index, per label.

    For label l with classes 0..K_l−1, gold classes t_i and predicted classes p_i of n samples:

    * ``accuracy_l = (1/n) Σ_i [t_i = p_i]`` (sklearn's ``accuracy_score``);
    * ``macro_f1_l = (1/K_l) Σ_c F1_c`` with ``F1_c = 2 tp_c / (#{t_i = c} + #{p_i = c})``, every
      class counted, one absent from gold and prediction scoring ``zero_division`` (sklearn's
      ``f1_score(average="macro", labels=range(K_l))``; with ``zero_division=np.nan`` such classes
      are left out, which is sklearn's default ``labels=None`` on predictions without -1);
    * ``rmse_l = sqrt((1/n) Σ_i d_i²)`` with ``d_i = t_i − p_i`` (``mean_squared_error ** 0.5``),
      only for ordinal labels, whose class index is an order (none < weak < medium < strong).

    A prediction of -1 (two or more classes kept, :func:`class_indices`) is wrong for accuracy, a
    miss of the gold class and no class's false positive for F1, and for RMSE as far off as the
    farthest class, ``d_i = max(t_i, K_l − 1 − t_i)``.

    Parameters
    ----------
    y_true : array-like of int, shape (n_samples, L)
        Gold class indices, each in ``0..K_l-1``.
    y_pred : array-like of int, shape (n_samples, L)
        Predicted class indices, each in ``-1..K_l-1``.
    n_classes : array-like of int, shape (L,)
        K_l, each at least 1.
    ordinal : array-like of bool, shape (L,), optional
        Labels whose classes are ordered; default all (the taxonomy's child order is the order).
    zero_division : float, default=0.0
        F1 of a class absent from both gold and prediction; ``np.nan`` leaves it out.

    Returns
    -------
    dict
        ``accuracy``, ``macro_f1``, ``rmse`` (ndarray (L,); ``rmse`` NaN for labels that are not
        ordinal); ``f1``, ``support``, ``predicted`` (ndarray (L, max K_l): per class F1, gold and
        predicted counts, padded with NaN / 0 past K_l); ``mean_accuracy``, ``mean_macro_f1``,
        ``mean_rmse`` (float: means over labels, NaN values left out; NaN when none is left).
    """
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    k = np.asarray(n_classes, dtype=np.int64)
    if t.ndim != 2 or t.shape != p.shape or t.shape[1] != len(k):
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must be (n_samples, {len(k)})")
    if not t.shape[0]:
        raise ValueError("no samples to score")
    if (k < 1).any() or (t < 0).any() or (t >= k).any() or (p < -1).any() or (p >= k).any():
        raise ValueError("class indices out of range: y_true in 0..K-1, y_pred in -1..K-1")
    ordinal = np.ones(len(k), dtype=bool) if ordinal is None else np.asarray(ordinal, dtype=bool)
    n_labels, width = len(k), int(k.max(initial=1))
    cell_t = np.arange(n_labels) * width + t          # (label, class) cell of each entry

    def count(cells):
        return np.bincount(cells, minlength=n_labels * width).reshape(n_labels, width)

    support, predicted = count(cell_t.ravel()), count((np.arange(n_labels) * width + p)[p >= 0])
    f1 = _div(2 * count(cell_t[t == p]), support + predicted, zero_division)
    f1[np.arange(width) >= k[:, None]] = np.nan         # padding past K_l
    macro = np.array([_mean(row[: n]) for row, n in zip(f1, k.tolist())])
    d = np.where(p >= 0, t - p, np.maximum(t, k - 1 - t)).astype(np.float64)
    rmse = np.where(ordinal, np.sqrt((d ** 2).mean(0)), np.nan)
    accuracy = (t == p).mean(0)
    return {"accuracy": accuracy, "macro_f1": macro, "rmse": rmse, "f1": f1, "support": support,
            "predicted": predicted, "mean_accuracy": _mean(accuracy), "mean_macro_f1": _mean(macro),
            "mean_rmse": _mean(rmse)}


def _label_class_section(t: sp.csr_array, p: sp.csr_array, index: TaxonomyIndex, lc: LabelClasses,
                         zero_division: float) -> dict:
    s = label_class_scores(class_indices(t, lc), class_indices(p, lc), lc.n_classes,
                           zero_division=zero_division)
    per_label = [{"id": lab, "name": index.names[col], "classes": list(names),
                  "accuracy": float(acc), "macro_f1": float(mf), "rmse": float(rm),
                  "f1": f1[: len(names)].tolist(), "support": sup[: len(names)].tolist(),
                  "predicted": pr[: len(names)].tolist()}
                 for lab, col, names, acc, mf, rm, f1, sup, pr in zip(
                     lc.labels, lc.label_cols.tolist(), lc.classes, s["accuracy"], s["macro_f1"], s["rmse"],
                     s["f1"], s["support"], s["predicted"])]
    return {"n_labels": len(lc), "mean_accuracy": s["mean_accuracy"], "mean_macro_f1": s["mean_macro_f1"],
            "mean_rmse": s["mean_rmse"], "per_label": per_label}


# ---- everything at once ---------------------------------------------------------------------
def evaluate(y_true: Indicator, y_pred: Indicator, index: TaxonomyIndex, *,
             zero_division: float = 0.0, dag_mode: str = "strict",
             include_per_label: bool = True) -> dict:
    """Every metric of this module in one pass, as plain JSON-able Python types.

    Parameters
    ----------
    y_true, y_pred : array-like or sparse matrix of shape (n_samples, n_nodes)
        Gold (normally closed under ancestors) and predicted indicator matrices, columns in
        the order of ``index.ids``.
    index : TaxonomyIndex
        The compiled taxonomy.
    zero_division : float, default=0.0
        See :func:`precision_recall_f1`.
    dag_mode : {"strict", "lenient"}, default="strict"
        See :func:`consistency`.
    include_per_label : bool, default=True
        Add the ``per_label`` list (one object per node).

    Returns
    -------
    result : dict
        ``n_samples``, ``n_labels``; ``micro_/macro_precision/recall/f1``; ``per_level``
        (see :func:`per_level_scores`); ``leaf_micro_f1``, ``leaf_macro_f1`` (leaf columns);
        ``hier_precision/recall/f1``; ``c_micro_precision/recall/f1``, ``c_macro_f1``;
        the :func:`consistency` figures; ``exact_match``, ``hamming_loss``,
        ``one_minus_hamming_loss``, ``hamming_score_jaccard``; ``samples_precision/recall/f1``;
        ``zero_division``, ``dag_mode``; and with ``include_per_label`` ``per_label``: a
        list of ``{id, name, level, precision, recall, f1, support, predicted}``. With labels
        that carry classes (:func:`label_classes`), ``label_classes``: ``n_labels``,
        ``mean_accuracy``, ``mean_macro_f1``, ``mean_rmse`` and ``per_label``, a list of ``{id,
        name, classes, accuracy, macro_f1, rmse, f1, support, predicted}`` (the last three per
        class), from :func:`label_class_scores` on :func:`class_indices` of both sets, every
        label ordinal in its child order. Ratios that are NaN (``zero_division=nan``) become None.
    """
    _check_dag_mode(dag_mode)
    t, p = _pair(y_true, y_pred, index)
    c = _counts(t, p)
    out: dict = {"n_samples": t.shape[0], "n_labels": t.shape[1]}
    for avg, fn in (("micro", _micro), ("macro", _macro)):
        out.update(zip((f"{avg}_precision", f"{avg}_recall", f"{avg}_f1"),
                       fn(c.tp, c.true, c.pred, zero_division)))
    out["per_level"] = _level_rows(c, index, zero_division)
    leaf = _select(c, index.leaf_mask)
    out["leaf_micro_f1"] = _micro(*leaf, zero_division)[2]
    out["leaf_macro_f1"] = _macro(*leaf, zero_division)[2]
    out.update(zip(("hier_precision", "hier_recall", "hier_f1"), _hier(t, p, index, zero_division)))
    out.update(_cf1(c, index, zero_division))
    out.update(_consistency(p, index, dag_mode))
    hl = _hamming(c, t.shape)
    out.update(exact_match=_exact(c), hamming_loss=hl, one_minus_hamming_loss=1.0 - hl,
               hamming_score_jaccard=_jaccard(c, zero_division))
    out.update(zip(("samples_precision", "samples_recall", "samples_f1"),
                   (_mean(v) for v in _prf(c.tp_s, c.true_s, c.pred_s, zero_division))))
    out.update(zero_division=float(zero_division), dag_mode=dag_mode)
    if include_per_label:
        prec, rec, f1 = (v.tolist() for v in _prf(c.tp, c.true, c.pred, zero_division))
        out["per_label"] = [
            {"id": i, "name": nm, "level": lv, "precision": pr, "recall": rc, "f1": f,
             "support": s, "predicted": pd}
            for i, nm, lv, pr, rc, f, s, pd in zip(index.ids, index.names, index.levels.tolist(),
                                                   prec, rec, f1, c.true.tolist(), c.pred.tolist())]
    lc = label_classes(index)
    if len(lc):
        out["label_classes"] = _label_class_section(t, p, index, lc, zero_division)
    return _jsonable(out)


def _jsonable(obj):
    """NaN -> None, recursively, so ``json.dumps`` writes valid JSON."""
    if isinstance(obj, float):
        return None if np.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj
