"""Scarce-data protocols: K texts per node (``data.shots``) or a share of the training split
(``data.train_fraction``), drawn per seed.

A sample's *own* nodes are the labels of its closed label set that have no labelled child in
it: the leaves it carries, or the internal node where its labels stop,

    own(y) = y ∧ ¬(y · A)        A[i, j] = 1 when j is a proper ancestor of i,

so a text that carries two leaves counts for both, and a text labelled only with an internal
node counts for that node. Every node that is some sample's own node is a *target* and gets K
samples that carry it as their own.

Targets are filled rarest first (fewest candidates; ties by column), each from a permutation of
its candidates seeded by ``(seed, stream)``. A first pass takes only candidates whose own nodes
are all still short of K, so one multi-label text does not push another node past K; a second
pass, for a target still short, takes any candidate left. A node with fewer than K candidates
takes them all and is reported short. On single-label data every target gets exactly
``min(K, candidates)`` samples.
"""

from __future__ import annotations

import numpy as np

from ..taxonomy import TaxonomyIndex


def own_nodes(y: np.ndarray, index: TaxonomyIndex) -> np.ndarray:
    """(S, N) bool: each sample's labels with no labelled child (see the module docstring)."""
    y = np.asarray(y, dtype=bool)
    below = (y.astype(np.int32) @ index.ancestors.astype(np.int32)) > 0     # ancestor of a label
    return y & ~below


def draw_shots(y: np.ndarray, index: TaxonomyIndex, k: int, seed: int, stream: int = 0,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """K samples per target node, drawn as the module docstring says.

    Parameters
    ----------
    y : ndarray of bool, shape (n_samples, n_nodes)
        Labels closed under ancestors.
    index : TaxonomyIndex
    k : int
        Samples wanted per node (0: none).
    seed, stream : int
        The draw's seed; ``stream`` separates draws of one seed (train 0, dev 1).
    exclude : ndarray of bool, shape (n_samples,), optional
        Samples never drawn (those another draw took).

    Returns
    -------
    indices : ndarray of int64
        The drawn samples, ascending.
    short : dict
        Node id -> samples drawn, for every target that got fewer than ``k``.
    """
    own = own_nodes(y, index)
    free = np.ones(len(own), dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    own_free = own & free[:, None]
    candidates = own_free.sum(0)
    targets = [int(i) for i in np.lexsort((np.arange(index.n_nodes), candidates)) if candidates[i] > 0]
    taken = np.zeros(len(own), dtype=bool)
    count = np.zeros(index.n_nodes, dtype=np.int64)
    rng = np.random.default_rng([seed, stream])
    if k > 0:
        for node in targets:
            if count[node] >= k:
                continue
            pool = rng.permutation(np.flatnonzero(own_free[:, node]))
            for strict in (True, False):
                for s in pool:
                    if count[node] >= k:
                        break
                    if taken[s] or (strict and (count[own[s]] >= k).any()):
                        continue
                    taken[s] = True
                    count[own[s]] += 1
    short = {index.ids[i]: int(count[i]) for i in targets if count[i] < k}
    return np.flatnonzero(taken), short


def draw_fraction(n: int, fraction: float, seed: int) -> np.ndarray:
    """``round(fraction · n)`` of ``n`` samples (at least one), drawn by ``seed``, ascending."""
    m = min(n, max(1, round(fraction * n)))
    return np.sort(np.random.default_rng([seed, 2]).permutation(n)[:m])
