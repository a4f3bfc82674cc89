"""Calibration: temperature scaling per level, and the expected calibration error.

For level l with logits ``z`` (samples × the level's nodes) and dev labels ``y``, one temperature

    T_l = argmin_T  - Σ [ y log σ(z / T) + (1 - y) log σ(-z / T) ]      (T > 0, fitted on log T)

so that σ(z / T_l) is a better probability (Guo et al. 2017, per level here because each level's
head sees its own label frequencies). Decisions do not change: thresholds act on ``z``; only the
probabilities that predict, serve and the estimator report are ``σ(z / T_level)``.

The expected calibration error over every (text, node) pair, with B equal-width bins of the
predicted probability:

    ECE = Σ_b (n_b / n) · | mean(y in b) - mean(p in b) |

Per-node probabilities can contradict the taxonomy (a child more probable than its parent,
although every text of the child is one of the parent). ``decode.consistent_scores`` makes them
agree, level by level over the compiled parent arrays (:func:`consistent`):

    min:  p'(n) = min(p(n), min_{a ∈ parents(n)} p'(a))     top-down: a child never above a parent
    max:  p'(a) = max(p(a), max_{n ∈ children(a)} p'(n))     bottom-up: a parent at least its children

``evaluate`` reports each choice's ECE and the share of texts where some child exceeds a parent
by more than 0.1 (:func:`violations`).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit

from .taxonomy import TaxonomyIndex


def _nll(z: np.ndarray, y: np.ndarray, log_t: float) -> float:
    s = z / np.exp(log_t)
    return float(-(y * log_expit(s) + (1 - y) * log_expit(-s)).mean())


def fit_temperatures(scores: np.ndarray, gold: np.ndarray, index: TaxonomyIndex) -> list[float]:
    """One temperature per level, fitted on dev logits ``scores`` (S, N) and labels ``gold`` (S, N).

    Non-finite logits (nodes a model cannot score) are left out; a level with nothing to fit
    keeps T = 1.
    """
    out = []
    for sl in index.level_slices:
        z, y = np.asarray(scores[:, sl], dtype=np.float64), np.asarray(gold[:, sl], dtype=np.float64)
        ok = np.isfinite(z)
        if not ok.any() or y[ok].min() == y[ok].max():
            out.append(1.0)
            continue
        z, y = z[ok], y[ok]
        res = minimize_scalar(lambda lt: _nll(z, y, lt), bounds=(-4.0, 4.0), method="bounded",
                              options={"xatol": 1e-4})
        out.append(float(np.exp(res.x)))
    return out


def calibrated(scores: np.ndarray, temperatures: list[float] | None, index: TaxonomyIndex) -> np.ndarray:
    """Probabilities σ(z / T_level) (S, N); without temperatures, σ(z)."""
    if not temperatures:
        return expit(scores)
    t = np.ones(index.n_nodes, dtype=np.float64)
    for sl, temp in zip(index.level_slices, temperatures):
        t[sl] = temp
    return expit(np.asarray(scores, dtype=np.float64) / t)


CONSISTENT = ("none", "min", "max")


def _edges(index: TaxonomyIndex) -> tuple[np.ndarray, np.ndarray]:
    """(child, parent) column pairs of every edge below level 1."""
    return np.repeat(np.arange(index.n_nodes), np.diff(index.parent_ptr)), np.asarray(index.parent_idx)


def consistent(probs: np.ndarray, index: TaxonomyIndex, how: str = "none") -> np.ndarray:
    """Probabilities (S, N) made to agree with the taxonomy: ``min`` caps each node at its
    parents' (top-down), ``max`` lifts each parent to its children's (bottom-up), ``none``
    returns them as they are. A parent's level is below its children's, so one pass over the
    levels settles every path."""
    if how == "none":
        return probs
    if how not in CONSISTENT:
        raise ValueError(f"consistent_scores must be one of {CONSISTENT}, not {how!r}")
    p = np.array(probs, dtype=np.float64, copy=True)
    child, parent = _edges(index)
    rows = slice(None)
    order = index.level_slices[1:] if how == "min" else index.level_slices[:0:-1]
    for sl in order:
        m = (child >= sl.start) & (child < sl.stop)
        if how == "min":
            bound = np.full((len(p), sl.stop - sl.start), np.inf)
            np.minimum.at(bound, (rows, child[m] - sl.start), p[:, parent[m]])
            p[:, sl] = np.minimum(p[:, sl], bound)
        else:
            np.maximum.at(p, (rows, parent[m]), p[:, child[m]])
    return p


def violations(probs: np.ndarray, index: TaxonomyIndex, margin: float = 0.1) -> float:
    """Share of texts with some child's probability above a parent's by more than ``margin``."""
    if not len(probs):
        return 0.0
    child, parent = _edges(index)
    return float((probs[:, child] > probs[:, parent] + margin).any(axis=1).mean())


def reliability(probs: np.ndarray, gold: np.ndarray, bins: int = 15) -> list[dict]:
    """Per probability bin: its range, count, mean predicted probability and observed frequency."""
    p, y = np.asarray(probs, dtype=np.float64).ravel(), np.asarray(gold, dtype=np.float64).ravel()
    ok = np.isfinite(p)
    p, y = p[ok], y[ok]
    which = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        out.append({"low": b / bins, "high": (b + 1) / bins, "count": int(m.sum()),
                    "confidence": float(p[m].mean()) if m.any() else None,
                    "frequency": float(y[m].mean()) if m.any() else None})
    return out


def ece(probs: np.ndarray, gold: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error (see the module docstring)."""
    rows = reliability(probs, gold, bins)
    n = sum(r["count"] for r in rows)
    return float(sum(r["count"] * abs(r["frequency"] - r["confidence"]) for r in rows if r["count"]) / max(1, n))
