"""Path probabilities from conditional scores, level by level in log space.

A node ``c`` reached from parent slot ``k`` (its k-th parent ``p_k``, the root for level-1 nodes)
has a conditional log-probability ``log P(c | p_k, text)``; its path probability and logit are

    log p(c) = min_k [log P(c | p_k) + log p(p_k)],    log p(root) = 0
    logit(c) = log p(c) − log(1 − p(c)) = log p(c) − log(−expm1(log p(c)))

In a tree the min has one term (``p(c) = P(c | parent) · p(parent)``); in a DAG the min over
parents keeps ``p(c) ≤ p(p)`` for every parent, so ``logit(c) ≤ logit(p)`` on every edge and one
global threshold is already consistent. The local classifier (:mod:`hmtc.models.local`, one
score per edge) and conditional MSML (:mod:`hmtc.models.msml`, one score per node) use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def parent_slots(index) -> tuple[np.ndarray, np.ndarray]:
    """Each node's parents padded (N, max parents), the root written as ``N`` for level-1 nodes,
    and which slots are real (``index.parents_padded`` has at least one column)."""
    pad = index.parents_padded
    valid = pad >= 0
    valid[index.n_parents == 0, 0] = True              # level 1: the root in the first slot
    return np.where(pad >= 0, pad, index.n_nodes), valid


def path_logits(step_logp: Callable[[slice], torch.Tensor], parent_pad: torch.Tensor, valid: torch.Tensor,
                slices: Sequence[slice], like: torch.Tensor) -> torch.Tensor:
    """Logits (B, N) of the path probabilities (module docstring).

    ``step_logp(sl)`` gives ``log P(c | p_k)`` of level ``sl``'s nodes, (B, n_l, P) or
    broadcastable to it; ``parent_pad`` (N, P) holds each slot's parent (``N``: the root) and
    ``valid`` (N, P) the real slots; ``like`` (B, ·) gives the batch size, dtype and device.
    Levels are built one after another and joined, without writing into a tensor, so the batch
    size stays dynamic in an exported graph.
    """
    n = len(parent_pad)
    inf = torch.tensor(float("inf"), device=like.device)
    tiny = torch.finfo(like.dtype).tiny                 # p = 1 exactly would give logit +inf
    root = torch.zeros_like(like[:, :1])                # log p(root) = 0
    logps, logits = [], []
    for sl in slices:
        ok = valid[sl]
        # parents lie in earlier levels (columns < sl.start); the root is put right after them
        par = torch.where(parent_pad[sl] == n, sl.start, parent_pad[sl])
        done_p = torch.cat([*logps, root], 1)
        done_z = torch.cat([*logits, root + inf], 1)
        lp = torch.where(ok, step_logp(sl) + done_p[:, par], inf).amin(-1)
        logps.append(lp)
        lp = lp.clamp_max(-tiny)
        # min with the parents' logits is a no-op in exact arithmetic; it keeps
        # logit(c) <= logit(p) bit-exact against last-ulp rounding in log/expm1
        parents = torch.where(ok, done_z[:, par], inf).amin(-1)
        # the clamp changes nothing in torch (−expm1(lp) ≥ tiny); in an exported graph it keeps
        # logit(c) finite where exp(lp) − 1 rounds to 0
        logits.append(torch.minimum(lp - torch.log((-torch.expm1(lp)).clamp_min(tiny)), parents))
    return torch.cat(logits, 1) if logits else like[:, :0]
