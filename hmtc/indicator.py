"""Indicator matrices: samples x labels, dense or sparse, and their canonical boolean CSR form,
which every metric and label-class computation works on."""

from __future__ import annotations

from typing import Union

import numpy as np
import scipy.sparse as sp

Indicator = Union[np.ndarray, sp.sparray, sp.spmatrix]


def as_csr(y: Indicator, n_labels: int | None = None) -> sp.csr_array:
    """Convert an indicator matrix to canonical boolean CSR.

    Parameters
    ----------
    y : array-like or sparse matrix of shape (n_samples, n_labels)
        Dense bool/int array (non-zero = positive) or any scipy sparse matrix or array.
    n_labels : int, optional
        Expected number of columns; a mismatch raises ``ValueError``.

    Returns
    -------
    csr : scipy.sparse.csr_array of bool
        Sorted column indices, no duplicates, no stored zeros. The input is never modified.
    """
    if sp.issparse(y):
        m = sp.csr_array(y).astype(bool)      # astype copies: the fixes below stay local
        m.sum_duplicates()                    # also sorts the indices
        m.eliminate_zeros()
    else:
        a = np.asarray(y)
        if a.ndim != 2:
            raise ValueError(f"indicator matrix must be 2-D, got shape {a.shape}")
        rows, cols = np.nonzero(a)            # row-major, so already canonical CSR order
        indptr = np.zeros(a.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=a.shape[0]), out=indptr[1:])
        m = sp.csr_array((np.ones(len(cols), dtype=bool), cols, indptr), shape=a.shape)
    if n_labels is not None and m.shape[1] != n_labels:
        raise ValueError(f"indicator matrix has {m.shape[1]} columns, the taxonomy {n_labels}")
    return m
