"""Consistent decoding of node scores (logits) over the compiled taxonomy, and threshold tuning.

Every method works level by level on whole score matrices (samples x nodes); none walks the
graph per sample. Thresholds are in logit space (0 is probability 0.5) and may be one global
value or one per node.

``top-down``  keep a node when its score passes and all its parents are kept.
``closure``   keep every node that passes, plus all of its ancestors.
``best``      the consistent set of highest total margin ``Σ (s_i - t_i)``: a bottom-up pass
              gives each node ``V_i = (s_i - t_i) + Σ_children max(0, V_c)``, then a top-down pass
              keeps ``V_i > 0`` under kept parents. Exact for trees (greedy for DAGs, where a
              child's value counts toward every parent). It may stop at an internal node when no
              child is confident. With ``single_path=True`` it keeps one path instead: the leaf
              with the highest mean ``log σ(s)`` per node along its path (a mean, so leaves of
              a ragged taxonomy compete at any depth), cut where a node falls below its
              threshold.

Exclusive sibling groups (``index.n_groups > 0``, from ``!exclusive`` marks): after any method,
:func:`keep_one_per_group` keeps within each group only the highest-scoring kept child and drops
everything below the others, so no group keeps two children. ``best`` already takes the groups
into account: an exclusive parent gains only its best child, ``V_p = (s_p - t_p) + max(0,
max_c V_c)``, and only that child may be kept, which is the highest-margin consistent set that
keeps at most one child per group (exact for trees). Without groups every method runs as before.

Completion (``complete=True``, for data whose every label set reaches a leaf): a kept internal
node with no kept child gets its highest-scoring child (one whose parents are all kept), level by
level from the top, so every prediction ends at a leaf. Without it, ``best`` stops at an internal
node whose children all fall below their thresholds, which on leaf-labelled data (DuEE) is a
certain loss at the leaf level; completion turns it into the model's best guess.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from .config import DecodeConfig
from .registry import Registry
from .taxonomy import TaxonomyIndex

DECODERS: Registry = Registry("decoding method")


def _thresholds(threshold: float | np.ndarray, n: int) -> np.ndarray:
    t = np.asarray(threshold, dtype=np.float32)
    return np.broadcast_to(t, (n,)) if t.ndim == 0 else t


def _parents_kept(keep: np.ndarray, index: TaxonomyIndex, sl: slice) -> np.ndarray:
    """(S, n_level) True where every parent of the level's nodes is kept (level 1: always)."""
    par = index.parents_padded[sl]
    valid = par >= 0
    kept = keep[:, np.where(valid, par, 0)]            # (S, n_level, max_parents)
    return np.all(kept | ~valid, axis=2)


def _child_to_parent(index: TaxonomyIndex, skip_groups: bool = False) -> sp.csr_array:
    """(N, N) incidence: [c, p] = 1 when p is a parent of c; ``skip_groups`` leaves out the edges
    into the parents of exclusive groups."""
    rows = np.repeat(np.arange(index.n_nodes), index.n_parents)
    cols = index.parent_idx
    if skip_groups:
        summed = ~np.isin(cols, index.exclusive_parent)
        rows, cols = rows[summed], cols[summed]
    return sp.csr_array((np.ones(len(rows), np.float32), (rows, cols)),
                        shape=(index.n_nodes, index.n_nodes))


def _group_losers(score: np.ndarray, among: np.ndarray, index: TaxonomyIndex) -> np.ndarray:
    """(S, N) True for every member of ``among`` (S, N) in an exclusive group that is not the
    group's highest-``score`` member of ``among`` (ties: the lowest column); all groups at once."""
    kids = index.exclusive_children
    valid = kids >= 0
    cols = np.where(valid, kids, 0)
    cand = among[:, cols] & valid                                       # (S, G, K)
    win = np.where(cand, score[:, cols], -np.inf).argmax(2)             # (S, G)
    np.put_along_axis(cand, win[..., None], False, axis=2)              # what is left loses
    rows, g, k = np.nonzero(cand)
    out = np.zeros(score.shape, dtype=bool)
    out[rows, cols[g, k]] = True
    return out


def keep_one_per_group(keep: np.ndarray, scores: np.ndarray, index: TaxonomyIndex) -> np.ndarray:
    """Within each exclusive group keep only the highest-scoring kept child, and drop every node
    that has a dropped node among its parents (level by level, so whole subtrees go).

    A consistent ``keep`` stays consistent. In a DAG a child that wins one group and loses another
    is dropped, which may leave the first group empty: at most one child per group holds always.
    """
    if not index.n_groups:
        return keep
    keep = keep & ~_group_losers(scores, keep, index)
    for sl in index.level_slices[1:]:
        keep[:, sl] &= _parents_kept(keep, index, sl)
    return keep


def top_down(scores: np.ndarray, index: TaxonomyIndex, threshold: float | np.ndarray = 0.0) -> np.ndarray:
    above = scores > _thresholds(threshold, index.n_nodes)
    keep = np.zeros_like(above)
    for sl in index.level_slices:
        keep[:, sl] = above[:, sl] & _parents_kept(keep, index, sl)
    return keep


def closure(scores: np.ndarray, index: TaxonomyIndex, threshold: float | np.ndarray = 0.0) -> np.ndarray:
    return index.closure(scores > _thresholds(threshold, index.n_nodes))


def best(scores: np.ndarray, index: TaxonomyIndex, threshold: float | np.ndarray = 0.0,
         single_path: bool = False) -> np.ndarray:
    t = _thresholds(threshold, index.n_nodes)
    if single_path:
        return _best_path(scores, index, t)
    value = (scores - t).astype(np.float32)
    if index.n_groups:
        return _best_exclusive(value, index)
    c2p = _child_to_parent(index)
    for sl in reversed(index.level_slices[1:]):
        gain = np.maximum(value[:, sl], 0)                     # (S, n_level)
        value += (c2p[sl].T @ gain.T).T                        # add each child's gain to its parents
    keep = np.zeros(scores.shape, dtype=bool)
    for sl in index.level_slices:
        keep[:, sl] = (value[:, sl] > 0) & _parents_kept(keep, index, sl)
    return keep


def _best_exclusive(value: np.ndarray, index: TaxonomyIndex) -> np.ndarray:
    """``best`` with exclusive groups, from the margins ``value`` (S, N): a group's parent gains
    only its best child's ``max(0, V_c)``, and only that child may be kept."""
    c2p = _child_to_parent(index, skip_groups=True)
    kids = index.exclusive_children
    cols = np.where(kids >= 0, kids, 0)
    parent_level = np.where(index.exclusive_parent >= 0, index.levels[index.exclusive_parent], 0)
    for level in range(index.depth, 0, -1):
        # a level's values are final once its groups add their best child (all children lie deeper)
        g = np.flatnonzero(parent_level == level)
        if len(g):
            best_child = np.where(kids[g] >= 0, value[:, cols[g]], -np.inf).max(2)      # (S, g)
            value[:, index.exclusive_parent[g]] += np.maximum(best_child, 0)
        if level > 1:
            sl = index.level_slices[level - 1]
            value += (c2p[sl].T @ np.maximum(value[:, sl], 0).T).T
    allowed = ~_group_losers(value, np.ones(value.shape, dtype=bool), index)
    keep = np.zeros(value.shape, dtype=bool)
    for sl in index.level_slices:
        keep[:, sl] = (value[:, sl] > 0) & allowed[:, sl] & _parents_kept(keep, index, sl)
    return keep


def _best_path(scores: np.ndarray, index: TaxonomyIndex, t: np.ndarray) -> np.ndarray:
    logp = -np.logaddexp(0, -scores.astype(np.float32))       # log sigmoid
    path = np.empty_like(logp)                                 # sum over the best path into a node
    length = np.ones(logp.shape, dtype=np.float32)             # its number of nodes
    rows = np.arange(len(logp))[:, None]
    for sl in index.level_slices:
        par = index.parents_padded[sl]
        if sl.start:                                           # best (mean) path into any parent
            cols = np.where(par >= 0, par, 0)
            mean = np.where(par >= 0, path[:, cols] / length[:, cols], -np.inf)   # (S, n, P)
            pick = cols[np.arange(cols.shape[0]), mean.argmax(axis=2)]             # (S, n)
            path[:, sl] = logp[:, sl] + path[rows, pick]
            length[:, sl] = 1 + length[rows, pick]
        else:
            path[:, sl] = logp[:, sl]
    leaves = np.flatnonzero(index.leaf_mask)
    chosen = leaves[np.argmax(path[:, leaves] / length[:, leaves], axis=1)]
    on_path = index.ancestors[chosen]                          # (S, N) ancestors of the chosen leaf
    on_path[np.arange(len(chosen)), chosen] = True
    keep = np.zeros_like(on_path)
    above = scores > t
    for sl in index.level_slices:
        keep[:, sl] = on_path[:, sl] & above[:, sl] & _parents_kept(keep, index, sl)
    return keep


def _children_padded(index: TaxonomyIndex) -> np.ndarray:
    """(N, max_children) child columns of each node, padded with -1."""
    order = np.argsort(index.parent_idx, kind="stable")
    kids = np.repeat(np.arange(index.n_nodes), index.n_parents)[order]
    counts = np.bincount(index.parent_idx, minlength=index.n_nodes)
    out = np.full((index.n_nodes, max(1, int(counts.max(initial=0)))), -1, dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(kids)) - np.repeat(start, counts)
    out[np.repeat(np.arange(index.n_nodes), counts), pos] = kids
    return out


def unsure(keep: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray, index: TaxonomyIndex) -> np.ndarray:
    """The kept nodes that are guesses (S, N): neither above their threshold nor implied by a kept
    descendant that is,

        sure = keep ∧ (s > t),    unsure_j = keep_j ∧ ¬sure_j ∧ ¬(∃ i: sure_i ∧ j ancestor of i)

    so a parent that closure or a path decoder keeps for a confident child is not flagged, and a
    path that ``at_least_one``, ``complete`` or ``leaf`` forced is. A kept node below an unsure one
    is unsure too (were it sure, it would imply its ancestors), so ``keep ∧ ¬unsure`` is consistent.
    """
    sure = keep & (scores > threshold)
    implied = np.asarray(sure.astype(np.float32) @ index.ancestors_csr) > 0
    return keep & ~sure & ~implied


def backed_off(keep: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray, index: TaxonomyIndex,
               at_least_one: bool = False) -> np.ndarray:
    """``keep`` without its :func:`unsure` nodes: each answer stops at the deepest node the model
    is sure of (a parent instead of a guessed child). With ``at_least_one``, a text with no sure
    node keeps the level-1 node(s) of its forced answer, which stay unsure."""
    out = keep & ~unsure(keep, scores, threshold, index)
    if at_least_one:
        empty = ~out.any(1) & keep.any(1)
        out[empty] = keep[empty] & (index.levels == 1)
    return out


def stops_early(keep: np.ndarray, index: TaxonomyIndex) -> np.ndarray:
    """(S,) True where a kept internal node has no kept child (the prediction stops above a leaf)."""
    kept_children = (_child_to_parent(index).T @ keep.T.astype(np.float32)).T
    return (keep & ~index.leaf_mask & (kept_children == 0)).any(1)


def complete_to_leaf(keep: np.ndarray, scores: np.ndarray, index: TaxonomyIndex) -> np.ndarray:
    """Extend every kept internal node that has no kept child by its best child, down to a leaf."""
    keep = keep.copy()
    children = _children_padded(index)
    internal = np.flatnonzero(~index.leaf_mask)
    for sl in index.level_slices:
        nodes = internal[(internal >= sl.start) & (internal < sl.stop)]
        if not len(nodes):
            continue
        kids = children[nodes]                                         # (n, C)
        valid = kids >= 0
        cols = np.where(valid, kids, 0)
        has_child = (keep[:, cols] & valid).any(2)                     # (S, n)
        need = keep[:, nodes] & ~has_child
        if not need.any():
            continue
        allowed = valid[None] & _parents_kept(keep, index, slice(0, index.n_nodes))[:, cols]
        cand = np.where(allowed, scores[:, cols], -np.inf)             # (S, n, C)
        pick = cols[np.arange(len(nodes))[None, :], cand.argmax(2)]    # (S, n)
        ok = need & np.isfinite(cand.max(2))
        rows, which = np.nonzero(ok)
        keep[rows, pick[rows, which]] = True
    return keep


# method -> (scores, index, threshold, single_path) -> kept nodes; one path per sample is best's own
DECODERS.register("top-down")(lambda scores, index, t, single_path: top_down(scores, index, t))
DECODERS.register("closure")(lambda scores, index, t, single_path: closure(scores, index, t))
DECODERS.register("best")(best)


def decode(scores: np.ndarray, index: TaxonomyIndex, method: str = "best",
           threshold: float | np.ndarray = 0.0, single_path: bool = False,
           at_least_one: bool = False, complete: bool = False, back_off: bool = False) -> np.ndarray:
    """Turn scores (S, N) into a consistent indicator matrix (S, N).

    Parameters
    ----------
    scores : ndarray of shape (n_samples, n_nodes)
        Logits, columns in ``index.ids`` order.
    index : TaxonomyIndex
    method : {"best", "top-down", "closure"}
    threshold : float or ndarray of shape (n_nodes,)
        Decision threshold(s) in logit space.
    single_path : bool
        For ``best``: keep one path per sample (single-path datasets).
    at_least_one : bool
        A sample left with no node gets the whole path of its most probable leaf (highest
        ``Σ log σ(s)`` along the path), for data where every sample has a label.
    complete : bool
        Extend each prediction that stops at an internal node by its best children down to a
        leaf (:func:`complete_to_leaf`), for data whose label sets all reach a leaf. In a tree
        every path then ends at a leaf; in a DAG a completing child that is a second kept child
        of another, exclusive parent can lose to its sibling there, and that path stays short.
    back_off : bool
        Drop the kept nodes that are guesses (:func:`backed_off`, after completion): answers stop
        at their deepest sure node.

    Returns
    -------
    ndarray of bool, shape (n_samples, n_nodes)
        Every kept node has all its parents kept, and no exclusive group keeps two children.
    """
    scores = np.asarray(scores, dtype=np.float32)
    keep = DECODERS.get(method)(scores, index, threshold, single_path)
    if at_least_one:
        empty = ~keep.any(1)
        if empty.any():
            no_threshold = np.full(index.n_nodes, -np.inf, dtype=np.float32)
            keep[empty] = _best_path(scores[empty], index, no_threshold)
    keep = keep_one_per_group(keep, scores, index)
    if complete:
        # completion adds a child only where none is kept; in a DAG that child may be a second
        # kept child of another, exclusive parent, hence the groups once more
        keep = keep_one_per_group(complete_to_leaf(keep, scores, index), scores, index)
    if back_off:
        keep = backed_off(keep, scores, threshold, index, at_least_one)
    return keep


def _micro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    tp = np.count_nonzero(pred & gold)
    denom = np.count_nonzero(pred) + np.count_nonzero(gold)
    return 2 * tp / denom if denom else 1.0


GRID = np.round(np.arange(-4.0, 4.01, 0.25), 2)
WEIGHT_STEPS = range(-6, 7)     # half-octaves around a member's spread-matched weight: 1/8 to 8 times


def tune_global_threshold(scores: np.ndarray, gold: np.ndarray, index: TaxonomyIndex,
                          method: str = "best", single_path: bool = False,
                          grid: np.ndarray = GRID, at_least_one: bool = False, complete: bool = False) -> float:
    """The logit threshold in ``grid`` that maximises micro-F1 after decoding (ties: closest to 0)."""
    gold = np.asarray(gold, dtype=bool)
    f1 = [_micro_f1(decode(scores, index, method, t, single_path, at_least_one, complete), gold) for t in grid]
    best_f1 = max(f1)
    return float(min((abs(t), t) for t, f in zip(grid, f1) if f >= best_f1 - 1e-12)[1])


def tuned_micro_f1(scores: np.ndarray, gold: np.ndarray, index: TaxonomyIndex, method: str = "best",
                   single_path: bool = False, at_least_one: bool = False, complete: bool = False) -> float:
    """Micro-F1 of ``scores`` decoded at their own tuned global threshold (:func:`tune_global_threshold`)."""
    gold = np.asarray(gold, dtype=bool)
    t = tune_global_threshold(scores, gold, index, method, single_path, at_least_one=at_least_one, complete=complete)
    return _micro_f1(decode(scores, index, method, t, single_path, at_least_one, complete), gold)


def tune_weights(member_scores: list[np.ndarray], gold: np.ndarray, index: TaxonomyIndex,
                 method: str = "best", single_path: bool = False, at_least_one: bool = False,
                 complete: bool = False, threshold: float | None = None, steps: range = WEIGHT_STEPS,
                 rounds: int = 3) -> tuple[np.ndarray, float, np.ndarray]:
    """Ensemble weights for the sum ``z = Σ_m w_m s_m`` of members' dev scores, the dev micro-F1
    they reach, and the half-octave steps each weight moved from its start.

    Member m's relative weight is ``r_m = b_m · 2^(k_m/2)``, starting from the weight that gives
    its scores the first member's spread, ``b_m = std(s_1) / std(s_m)`` (SVM margins and logits
    differ by an order of magnitude), with ``k_1 = 0``. Every candidate sum is scaled back to the
    first member's spread,

        w_m = c · r_m,      c = std(s_1) / std(Σ_m r_m s_m),

    so each meets the threshold grid (or the fixed ``threshold``) on the first member's logit
    scale, and only the members' proportions decide. Member by member, ``k_m`` takes the value in
    ``steps`` whose ``z`` decodes to the highest micro-F1 (at its own tuned global threshold, the
    figure evaluation tunes it for), for ``rounds`` passes or until none moves. Ties go to the
    smaller ``|k_m|``, so identical members keep equal weights.

    Parameters
    ----------
    member_scores : list of ndarray of shape (n_samples, n_nodes)
        Each member's dev logits, columns in ``index.ids`` order.
    gold : ndarray of bool, shape (n_samples, n_nodes)
    index, method, single_path, at_least_one, complete
        As for :func:`decode`.
    threshold : float, optional
        A fixed decision threshold; None tunes one per candidate (:func:`tune_global_threshold`).

    Returns
    -------
    weights : ndarray of shape (n_members,)
    micro_f1 : float
    steps : ndarray of int, shape (n_members,)
        ``k_m``; one at the edge of ``steps`` says the search would have gone further.
    """
    gold = np.asarray(gold, dtype=bool)
    s = [np.asarray(x, dtype=np.float64) for x in member_scores]
    spread = [float(x.std()) for x in s]
    base = np.array([1.0] + [spread[0] / v if v > 0 and spread[0] > 0 else 1.0 for v in spread[1:]])
    k = np.zeros(len(s), dtype=int)

    def weights_of(kk: np.ndarray) -> np.ndarray:
        r = base * 2.0 ** (kk / 2)
        total = float(sum(w * x for w, x in zip(r, s)).std())
        return r * (spread[0] / total if total > 0 and spread[0] > 0 else 1.0)

    def f1_of(kk: np.ndarray) -> float:
        z = sum(w * x for w, x in zip(weights_of(kk), s)).astype(np.float32)
        if threshold is None:
            return tuned_micro_f1(z, gold, index, method, single_path, at_least_one, complete)
        return _micro_f1(decode(z, index, method, threshold, single_path, at_least_one, complete), gold)

    best = f1_of(k)
    for _ in range(rounds):
        moved = False
        for m in range(1, len(s)):
            for step in sorted(steps, key=abs):
                if step == k[m]:
                    continue
                trial = k.copy()
                trial[m] = step
                f = f1_of(trial)
                if f > best + 1e-12 or (abs(f - best) <= 1e-12 and abs(step) < abs(k[m])):
                    best, k, moved = f, trial, True
        if not moved:
            break
    return weights_of(k), best, k


def tune_label_thresholds(scores: np.ndarray, gold: np.ndarray, global_threshold: float | np.ndarray,
                          min_support: int = 5, grid: np.ndarray = GRID, prior: float = 0.0) -> np.ndarray:
    """Per-node logit thresholds maximising each node's own F1 on dev.

    Without a ``prior``, nodes with fewer than ``min_support`` dev positives keep
    ``global_threshold`` (a value, or one per node such as :func:`tune_level_thresholds`' result),
    so rare labels do not overfit. With ``prior = m > 0`` every node's own optimum ``t̂_i`` is
    shrunk toward that value ``t_0`` by its ``n_i`` dev positives,

        t_i = (n_i · t̂_i + m · t_0) / (n_i + m),

    so a node seen twice on dev moves ``2 / (2 + m)`` of the way to its own optimum (few-shot
    dev splits, rare labels). All nodes and grid points are scored at once.
    """
    gold = np.asarray(gold, dtype=bool)
    base = np.broadcast_to(np.asarray(global_threshold, dtype=np.float32), (gold.shape[1],))
    above = scores[None, :, :] > grid[:, None, None]              # (G, S, N)
    tp = (above & gold[None]).sum(1)
    f1 = 2 * tp / (above.sum(1) + gold.sum(0)[None]).clip(min=1)  # (G, N)
    out = grid[np.argmax(f1, axis=0)].astype(np.float32)
    n = gold.sum(0)
    if prior > 0:
        return ((n * out + prior * base) / (n + prior)).astype(np.float32)
    return np.where(n < min_support, base, out).astype(np.float32)


def tune_level_thresholds(scores: np.ndarray, gold: np.ndarray, index: TaxonomyIndex,
                          global_threshold: float, grid: np.ndarray = GRID) -> np.ndarray:
    """One logit threshold per level, the grid value maximising the level's micro-F1 of
    ``scores > t`` on dev (ties: the one closest to ``global_threshold``), as an (N,) array;
    a level without dev positives keeps ``global_threshold``."""
    gold = np.asarray(gold, dtype=bool)
    out = np.full(index.n_nodes, global_threshold, dtype=np.float32)
    for sl in index.level_slices:
        g = gold[:, sl]
        if not g.any():
            continue
        above = scores[None, :, sl] > grid[:, None, None]
        tp = (above & g[None]).sum((1, 2))
        f1 = 2 * tp / (above.sum((1, 2)) + g.sum()).clip(min=1)
        best = f1.max()
        out[sl] = min((abs(t - global_threshold), t) for t, f in zip(grid, f1) if f >= best - 1e-12)[1]
    return out


@dataclass(frozen=True)
class Decoding:
    """A run's decoding policy, one object from the config to ``decode.json``: the method, the
    flags that shape a prediction (one path, at least one label, completion to a leaf, backing
    off from guesses), the logit thresholds (one, or one per node) and the per-level
    calibration temperatures.

    Its life: :meth:`resolve` reads the ``[decode]`` config with its ``"auto"`` flags settled on
    the training labels (untuned: threshold 0); :meth:`tune` fits the thresholds (global, per
    level and/or per label, as the config asks) and the temperatures on dev; :meth:`apply`
    decodes scores; :meth:`to_json` / :meth:`from_json` are ``decode.json``.
    """

    method: str = "best"
    threshold: float = 0.0
    per_label_thresholds: np.ndarray | None = None
    single_path: bool = False
    at_least_one: bool = False
    complete: bool = False
    back_off: bool = False
    temperatures: tuple[float, ...] | None = None

    @classmethod
    def resolve(cls, d: DecodeConfig, index: TaxonomyIndex, train_y: np.ndarray) -> Decoding:
        """The ``[decode]`` table ``d``, its ``"auto"`` flags read from the training labels
        ``train_y`` (closed, (S, N)): one path when no text has two leaves, at least one label
        when every text has one, completion when every label set reaches a leaf."""
        train_y = np.asarray(train_y, dtype=bool)
        leaves = (train_y & index.leaf_mask).sum(1)
        single, one, comp = d.single_path, d.at_least_one, d.complete
        return cls(method=d.method,
                   single_path=bool((leaves <= 1).all()) if single == "auto" else bool(single),
                   at_least_one=bool(train_y.any(1).all()) if one == "auto" else bool(one),
                   complete=(not stops_early(train_y, index).any()) if comp == "auto" else bool(comp),
                   back_off=d.back_off)

    @property
    def thresholds(self) -> float | np.ndarray:
        """The thresholds :func:`decode` takes: one per node when tuned so, else the global one."""
        return self.threshold if self.per_label_thresholds is None else self.per_label_thresholds

    def tune(self, d: DecodeConfig, scores: np.ndarray, gold: np.ndarray, index: TaxonomyIndex,
             temperatures) -> Decoding:
        """Thresholds as ``d`` asks (``threshold = "tune"``: the global one maximising dev
        micro-F1 under this decoding, else the fixed value; then ``per_level`` and/or
        ``per_label``, shrunk by ``label_prior``), tuned on dev ``scores`` / ``gold``; and the
        per-level ``temperatures`` (a function of scores, gold and index: calibration's fit).
        Without dev texts nothing is tuned: threshold 0 (or the fixed one), temperatures 1."""
        gold = np.asarray(gold, dtype=bool)
        if not len(gold):
            threshold = 0.0 if d.threshold == "tune" else float(d.threshold)
            return replace(self, threshold=threshold, per_label_thresholds=None,
                           temperatures=(1.0,) * index.depth)
        if d.threshold == "tune":
            threshold = tune_global_threshold(scores, gold, index, self.method, self.single_path,
                                              at_least_one=self.at_least_one, complete=self.complete)
        else:
            threshold = float(d.threshold)
        thr: float | np.ndarray = threshold
        if d.per_level:
            thr = tune_level_thresholds(scores, gold, index, threshold)
        if d.per_label:
            thr = tune_label_thresholds(scores, gold, thr, prior=d.label_prior)
        return replace(self, threshold=float(threshold),
                       per_label_thresholds=np.asarray(thr, dtype=np.float32) if np.ndim(thr) else None,
                       temperatures=tuple(float(t) for t in temperatures(scores, gold, index)))

    def apply(self, scores: np.ndarray, index: TaxonomyIndex, leaf: bool = False,
              back_off: bool | None = None, complete: bool | None = None) -> np.ndarray:
        """:func:`decode` under this policy; ``leaf`` forces a complete path (at least one label,
        completed, no backing off); ``back_off`` / ``complete`` (None: the policy's) override."""
        comp = self.complete if complete is None else complete
        off = self.back_off if back_off is None else back_off
        return decode(scores, index, self.method, self.thresholds, self.single_path,
                      leaf or self.at_least_one, leaf or comp, not leaf and off)

    def to_json(self) -> dict:
        """``decode.json``'s keys, in its order."""
        return {"method": self.method, "single_path": self.single_path, "at_least_one": self.at_least_one,
                "threshold": self.threshold, "complete": self.complete, "back_off": self.back_off,
                "temperatures": None if self.temperatures is None else list(self.temperatures),
                "per_label_thresholds": None if self.per_label_thresholds is None
                else self.per_label_thresholds.tolist()}

    @classmethod
    def from_json(cls, dec: dict, method: str = "best") -> Decoding:
        """A (validated: :func:`hmtc.checkpoint.check_decode`) ``decode.json``; keys older files
        lack take their defaults, ``method`` the run config's."""
        per_label = dec.get("per_label_thresholds")
        temps = dec.get("temperatures")
        return cls(method=dec.get("method", method), threshold=float(dec.get("threshold", 0.0)),
                   per_label_thresholds=None if not per_label else np.asarray(per_label, dtype=np.float32),
                   single_path=bool(dec.get("single_path", False)), at_least_one=bool(dec.get("at_least_one", False)),
                   complete=bool(dec.get("complete", False)), back_off=bool(dec.get("back_off", False)),
                   temperatures=None if temps is None else tuple(float(t) for t in temps))
