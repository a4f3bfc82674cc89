"""Multi-label losses over logits (B, N) and 0/1 targets (B, N), chosen by name.

ZLPR ("multilabel categorical cross-entropy", Su 2020) for one sample with scores s:

    L = log(1 + Σ_{i ∈ neg} exp(s_i)) + log(1 + Σ_{j ∈ pos} exp(-s_j))

which ranks every positive above 0 and every negative below 0, so the decision is s > 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import Registry

LOSSES: Registry = Registry("loss")


@LOSSES.register("bce")
def bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean sigmoid binary cross-entropy; ``mask`` (B, N) drops entries from the mean."""
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return _masked_mean(loss, mask)


@LOSSES.register("zlpr")
def zlpr(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """ZLPR loss, mean over samples; masked entries take no part."""
    y = targets.to(torch.bool)
    s = logits.float()
    if mask is not None:
        s = s.masked_fill(~mask.bool(), float("-inf"))  # exp(-inf) = 0 in both sums
        pos_s = torch.where(y & mask.bool(), -s, torch.full_like(s, float("-inf")))
    else:
        pos_s = torch.where(y, -s, torch.full_like(s, float("-inf")))
    neg_s = torch.where(y, torch.full_like(s, float("-inf")), s)
    zeros = torch.zeros_like(s[:, :1])
    return (torch.logsumexp(torch.cat([zeros, neg_s], 1), 1)
            + torch.logsumexp(torch.cat([zeros, pos_s], 1), 1)).mean()


def _masked_mean(loss: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return loss.mean()
    m = mask.to(loss.dtype)
    return (loss * m).sum() / m.sum().clamp_min(1.0)
