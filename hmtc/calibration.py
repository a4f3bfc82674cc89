"""Calibration: temperature scaling per level, and the expected calibration error.

For level l with logits ``z`` (samples × the level's nodes) and dev labels ``y``, one temperature

    T_l = argmin_T  - Σ [ y log σ(z / T) + (1 - y) log σ(-z / T) ]      (T > 0, fitted on log T)

so that σ(z / T_l) is a better probability (Guo et al. 2017, per level here because each level's
head sees its own label frequencies). Decisions do not change: thresholds act on ``z``; only the
probabilities that predict, serve and the estimator report are ``σ(z / T_level)``.

The expected calibration error over every (text, node) pair, with B equal-width bins of the
predicted probability:

    ECE = Σ_b (n_b / n) · | mean(y in b) - mean(p in b) |
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
