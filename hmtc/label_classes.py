"""Labels with their own exclusive classes (``docs/label-classes.md``): a taxonomy node ``joy`` with
children ``joy:weak``, ``joy:strong`` is a label whose value is one of its classes. Found once in
the compiled taxonomy (:func:`label_classes`), read off indicator matrices as class indices
(:func:`class_indices`), and filled in where a text names the label but no class
(:func:`with_absent_classes`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .indicator import Indicator, as_csr
from .taxonomy import TaxonomyIndex

CLASS_SEP = ":"


@dataclass(frozen=True)
class LabelClasses:
    """The labels that carry classes, found in a compiled taxonomy by :func:`label_classes`.

    Attributes
    ----------
    labels : tuple of str
        Label ids, in column order.
    label_cols : ndarray of int64, shape (L,)
        Column of each label.
    classes : tuple of tuple of str
        Each label's class names (``"weak"`` for the node ``joy:weak``) in the taxonomy's child
        order: the class index, 0 for the first child.
    class_cols : ndarray of int64, shape (L, K)
        Columns of each label's classes in that order, padded with -1; K is at least 1.
    """

    labels: tuple[str, ...]
    label_cols: np.ndarray
    classes: tuple[tuple[str, ...], ...]
    class_cols: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> np.ndarray:
        """(L,) number of classes of each label."""
        return (self.class_cols >= 0).sum(1)


def class_name(label: str, node: str) -> str | None:
    """The class that the id ``node`` names for ``label``: ``"weak"`` for ``("joy", "joy:weak")``;
    None unless ``node`` is ``label``, :data:`CLASS_SEP` and a non-empty rest."""
    prefix = label + CLASS_SEP
    return node[len(prefix):] if node.startswith(prefix) and len(node) > len(prefix) else None


def label_classes(index: TaxonomyIndex) -> LabelClasses:
    """The labels of ``index`` whose classes the taxonomy holds as an exclusive group under them.

    A node ``p`` (not the root) is a label with classes when its children form an exclusive
    group (``p !exclusive`` with at least two children) and every child is a leaf with ``p`` as
    its only parent and the id ``p:<class>``. Anything else, e.g. one child without the prefix,
    is an ordinary exclusive group (``hmtc taxonomy validate`` points such near misses out).

    Parameters
    ----------
    index : TaxonomyIndex

    Returns
    -------
    LabelClasses
        Empty (``len() == 0``) for a taxonomy without such labels.
    """
    labels, cols, names = [], [], []
    for p, kids in zip(index.exclusive_parent.tolist(), index.exclusive_children):
        kids = kids[kids >= 0]       # ascending columns: the child order, all sit one level below p
        if p < 0 or not index.leaf_mask[kids].all() or (index.n_parents[kids] != 1).any():
            continue
        found = [class_name(index.ids[p], index.ids[c]) for c in kids.tolist()]
        if None not in found:
            labels.append(index.ids[p])
            cols.append(kids)
            names.append(tuple(found))
    class_cols = np.full((len(cols), max((len(c) for c in cols), default=1)), -1, dtype=np.int64)
    for i, c in enumerate(cols):
        class_cols[i, : len(c)] = c
    return LabelClasses(tuple(labels), np.array([index.id_to_index[lab] for lab in labels], dtype=np.int64),
                        tuple(names), class_cols)


def _class_hits(y: Indicator, lc: LabelClasses) -> np.ndarray:
    """(S, L, K) True where a row holds class k of label l."""
    valid = lc.class_cols >= 0
    m = as_csr(y)
    sub = m[:, np.where(valid, lc.class_cols, 0).ravel()].toarray()
    return sub.reshape(m.shape[0], *lc.class_cols.shape) & valid


def class_indices(y: Indicator, lc: LabelClasses) -> np.ndarray:
    """Each row's class of each label, as a class index.

    Parameters
    ----------
    y : array-like or sparse matrix of shape (n_samples, n_nodes)
        Indicator matrix, gold or predicted.
    lc : LabelClasses

    Returns
    -------
    ndarray of int64, shape (n_samples, L)
        The index of the one class the row holds; 0 (the first class) where it holds none, an
        absent label; -1 where it holds two or more, which names no class (only undecoded
        predictions can: decoding keeps at most one child per exclusive group).
    """
    hits = _class_hits(y, lc)
    n = hits.sum(2)
    return np.where(n == 0, 0, np.where(n == 1, hits.argmax(2), -1)).astype(np.int64)


def with_absent_classes(y: Indicator, index: TaxonomyIndex, lc: LabelClasses | None = None) -> Indicator:
    """Put every label with classes that a row does not hold into its first class.

    The reading of an absent label that keeps each label's softmax meaningful: every text has
    one class of every label (``none``, intensity 0, when it does not mention the label), so
    each label's exclusive group trains on every text. The result is closed under ancestors.

    Parameters
    ----------
    y : array-like or sparse matrix of shape (n_samples, n_nodes)
        Gold indicator matrix.
    index : TaxonomyIndex
    lc : LabelClasses, optional
        ``label_classes(index)``, when already at hand.

    Returns
    -------
    ndarray of bool or scipy.sparse.csr_array of bool
        ``y`` plus, for each (row, label) without a class, the label's first class and its
        ancestors; sparse in, canonical CSR out; dense in, dense out. ``y`` itself when the
        taxonomy has no labels with classes.
    """
    lc = label_classes(index) if lc is None else lc
    if not len(lc):
        return y
    rows, labels = np.nonzero(~_class_hits(y, lc).any(2))
    first = lc.class_cols[labels, 0]
    if sp.issparse(y):
        add = sp.csr_array((np.ones(len(rows), dtype=bool), (rows, first)), shape=y.shape)
        return index.closure(as_csr(y) + add)
    out = np.array(y, dtype=bool)
    out[rows, first] = True
    return index.closure(out)
