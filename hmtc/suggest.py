"""What to label next: the texts of an unlabelled pool a trained run is least sure of, spread out
so that a queue is not a run of near-duplicates, as JSONL or as Label Studio tasks whose
pre-annotations are the run's predictions.

Uncertainty. With logits z, tuned thresholds t and per-level temperatures T (the run's
decode.json), the decision at node j is z_j > t_j, and its calibrated margin is

    m_j = |z_j − t_j| / T_level(j)

The decisions a text's answer rests on are those at nodes whose parents it predicts (level 1
always): D(x) = {j : every parent of j is predicted}, so an unsure child under a rejected parent
does not count. Rarer nodes weigh more, rarity read from the pool itself (``weights = "pool"``;
p̄_j: the mean of σ((z_j − t_j) / T) over the pool, a node's predicted share) or from the run's
labelled texts (``weights = "labelled"``; n_j: the training texts that carry node j, the
checkpoint's support, so a node whose labels lag behind the others' weighs as 1 / sqrt(n_j), the
rate at which one more label still moves its estimate):

    w_j = min(10, sqrt(max_k p̄_k / max(p̄_j, 1 / |pool|)))        pool
    w_j = min(10, sqrt(max_k n_k / max(n_j, 1)))                  labelled
    u(x) = max_{j ∈ D(x)} w_j · exp(−m_j)

and the node j* that attains it (its level: the deepest decision that matters is often a leaf
under a sure parent) is reported with the text.

Diversity. Among the ``candidates`` most uncertain texts, a greedy weighted k-centre picks, each
step, the text maximising u(x) · min(1, d(x) / d̄), d(x) its Euclidean distance to the nearest text
already picked in the space of calibrated probabilities σ((z − t) / T) (what the model thinks a
text is; any engine gives it, a TF-IDF run included) and d̄ the median of the first step's
distances. A text identical to one already picked has d = 0 and is never picked again; equal texts
are merged before anything else, so a queue never repeats a text. Ties go to the earlier pool line:
the queue is a function of the run and the pool; ``strategy = "random"`` (the baseline of the
simulated labelling loop) draws k texts with the seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import numpy as np

from .checkpoint import Checkpoint, read_support
from .errors import HmtcError
from .predict import decode_checkpoint, deepest_paths
from .taxonomy import Taxonomy, TaxonomyIndex

STRATEGIES = ("uncertain", "random")
WEIGHTS = ("pool", "labelled")


@dataclass
class Pick:
    """One queued text: its pool line (0-based), uncertainty u, the deciding node and its level,
    and the run's prediction (node ids)."""

    line: int
    uncertainty: float
    node: str
    level: int
    labels: list[str]


def uncertainty(scores: np.ndarray, keep: np.ndarray, thr: np.ndarray, temperatures: Sequence[float] | None,
                index: TaxonomyIndex, support: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u (S,), the deciding node j* (S,), calibrated probabilities σ((z − t) / T) (S, N)); see the
    module docstring. ``support`` (N,): the labelled texts of each node, weighing nodes by it
    (``labelled``) instead of by their share of the pool."""
    temps = np.ones(index.n_nodes, dtype=np.float64)
    for sl, t in zip(index.level_slices, temperatures or []):
        temps[sl] = t
    margin = (np.asarray(scores, dtype=np.float64) - np.broadcast_to(thr, scores.shape)) / temps
    prob = 1.0 / (1.0 + np.exp(-np.clip(margin, -50, 50)))
    if support is None:
        share = prob.mean(0)
        w = np.minimum(10.0, np.sqrt(share.max() / np.maximum(share, 1.0 / max(len(scores), 1))))
    else:
        n = np.asarray(support, dtype=np.float64)
        w = np.minimum(10.0, np.sqrt(n.max() / np.maximum(n, 1.0)))
    par, valid = index.parents_padded, index.parents_padded >= 0
    # a node's decision counts when every parent is predicted (the root: always)
    parents_kept = np.where(valid[None], keep[:, np.where(valid, par, 0)], True).all(2)
    weighted = np.where(parents_kept, w * np.exp(-np.abs(margin)), -np.inf)
    node = weighted.argmax(1)
    return weighted[np.arange(len(node)), node], node, prob


def k_center(u: np.ndarray, reps: np.ndarray, k: int) -> list[int]:
    """Rows picked greedily by u · min(1, d / d̄) (the module docstring), ties to the lower row."""
    picked: list[int] = [int(np.argmax(u))]
    d = np.linalg.norm(reps - reps[picked[0]], axis=1)
    scale = float(np.median(d[d > 0])) if (d > 0).any() else 1.0
    while len(picked) < min(k, len(u)):
        gain = u * np.minimum(1.0, d / scale)
        if gain.max() <= 0:                     # only texts equal to picked ones are left
            break
        i = int(np.argmax(gain))
        picked.append(i)
        d = np.minimum(d, np.linalg.norm(reps - reps[i], axis=1))
    return picked


def suggest(ckpt: Checkpoint, texts: Sequence[str], k: int, strategy: str = "uncertain", seed: int = 0,
            candidates: int = 10_000, scores: np.ndarray | None = None, weights: str = "pool") -> list[Pick]:
    """The ``k`` texts to label next (fewer when the pool has fewer distinct non-blank texts), most
    useful first.

    Parameters
    ----------
    ckpt : Checkpoint
        A trained run's checkpoint (any engine).
    texts : sequence of str
        The pool.
    k : int
        Queue length, at least 1.
    strategy : {"uncertain", "random"}
    seed : int
        The draw of ``random``.
    candidates : int
        The most uncertain texts the diversity step chooses among.
    scores : ndarray of shape (len(texts), n_nodes), optional
        The run's scores of the pool where the caller has them (``hmtc suggest`` reads a run's
        frozen layers from its store, :func:`hmtc.inference.score_texts`); None: ``ckpt.scores``.
    weights : {"pool", "labelled"}
        What makes a node rare (the module docstring): its predicted share of the pool, or how few
        of the run's training texts carry it (the checkpoint's support).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise HmtcError(f"-k must be a whole number of texts, at least 1, not {k!r}")
    if strategy not in STRATEGIES:
        raise HmtcError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if weights not in WEIGHTS:
        raise HmtcError(f"unknown weights {weights!r}; known: {', '.join(WEIGHTS)}")
    support = None
    if weights == "labelled":
        support = read_support(ckpt.path)
        if support is None or len(support) != len(ckpt.index.ids):
            raise HmtcError(f"weights 'labelled' reads each node's training texts from the checkpoint's labels.json, "
                            f"and {ckpt.path} records none (an ensemble keeps none, nor does a run saved before hmtc "
                            f"kept them): use weights 'pool'")
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        if t.strip():
            first.setdefault(t, i)
    lines = sorted(first.values())
    if not lines:
        raise HmtcError("the pool holds no text to label (every line is blank)")
    if scores is None:
        scores = ckpt.scores([texts[i] for i in lines])
    elif np.shape(scores) != (len(texts), len(ckpt.index.ids)):
        raise HmtcError(f"scores of shape {np.shape(scores)} for {len(texts)} texts and {len(ckpt.index.ids)} nodes")
    else:
        scores = np.asarray(scores, dtype=np.float32)[lines]
    keep, thr = decode_checkpoint(ckpt, scores)
    u, node, prob = uncertainty(scores, keep, thr, ckpt.decoding.temperatures, ckpt.index, support)
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(lines))[:k].tolist()
    else:
        cand = np.argsort(-u, kind="stable")[:max(candidates, k)]
        order = [int(cand[i]) for i in k_center(u[cand], prob[cand], k)]
    index = ckpt.index
    return [Pick(lines[r], round(float(u[r]), 6), index.ids[node[r]], int(index.levels[node[r]]),
                 [index.ids[j] for j in np.flatnonzero(keep[r])]) for r in order]


def label_studio_config(taxonomy: Taxonomy) -> str:
    """A Label Studio labelling config: the text and a Taxonomy tag of nested Choices, each with
    the node's display name as its value and its id as its alias (results carry the ids; a node
    with two parents appears under both)."""
    def choices(node: str, depth: int) -> list[str]:
        pad = "  " * depth
        out = []
        for child in taxonomy.children(node):
            attrs = f"value={quoteattr(taxonomy.name(child))} alias={quoteattr(child)}"
            inner = choices(child, depth + 1)
            out += [f"{pad}<Choice {attrs}>", *inner, f"{pad}</Choice>"] if inner else [f"{pad}<Choice {attrs}/>"]
        return out

    return "\n".join(['<View>', '  <Text name="text" value="$text"/>',
                      '  <Taxonomy name="taxonomy" toName="text" showFullPath="true">',
                      *choices(taxonomy.root, 2), '  </Taxonomy>', '</View>']) + "\n"


def label_studio_task(item: dict, pick: Pick, index: TaxonomyIndex, model_version: str) -> dict:
    """A Label Studio task: ``data`` (the text and the fields kept from its pool line) and one
    prediction whose taxonomy result lists each predicted node's path of ids from level 1
    (the config's aliases); ``score`` is 1 − u."""
    row = np.zeros(index.n_nodes, dtype=bool)
    row[[index.id_to_index[n] for n in pick.labels]] = True
    paths = [[index.ids[j] for j in path] for path in deepest_paths(index, row)]
    result = [{"from_name": "taxonomy", "to_name": "text", "type": "taxonomy", "value": {"taxonomy": paths}}]
    return {"data": dict(item), "predictions": [{"model_version": model_version, "score": round(1 - pick.uncertainty, 6),
                                                 "result": result if paths else []}]}
