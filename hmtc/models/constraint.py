"""The hierarchy constraint of C-HMCNN (Giunchiglia and Lukasiewicz, NeurIPS 2020) in logit space.

For node logits ``z`` (B, N) and ``D(i) = {i} ∪ descendants(i)``::

    MCM      ẑ_i = max_{j ∈ D(i)} z_j                          the constrained output
    MCLoss   ẑʸ_i = max_{j ∈ D(i), y_j = 1} z_j   if y_i = 1    (i itself is positive: never empty)
             ẑʸ_i = max_{j ∈ D(i)} z_j            if y_i = 0
             loss = L(ẑʸ, y)

σ is monotone, so a max over logits is the max over the probabilities that the paper writes. A
parent's ``ẑ`` is at least each child's, so thresholding ``ẑ`` at any value keeps every parent of
a kept node: consistency by construction, before any decoding. In MCLoss a positive node is
raised only through its positive descendants, and a negative one is lowered through its highest
descendant, so the gradient reaches the node that breaks the hierarchy.
"""

from __future__ import annotations

import numpy as np
import torch

from ..taxonomy import TaxonomyIndex


def descendant_mask(index: TaxonomyIndex) -> np.ndarray:
    """(N, N) bool: ``[i, j]`` is True when ``j ∈ D(i)``, i.e. ``j`` is ``i`` or below it."""
    return index.ancestors.T | np.eye(index.n_nodes, dtype=bool)


def constrain(z: torch.Tensor, under: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """MCM of ``z`` (B, N) over ``under`` (:func:`descendant_mask`); with ``labels``, MCLoss's
    training output ``ẑʸ``. Memory is B·N², fine for taxonomies of a few hundred nodes."""
    spread = z[:, None, :].masked_fill(~under[None], float("-inf"))        # (B, N, N): z_j for j ∈ D(i)
    out = spread.amax(-1)
    if labels is None:
        return out
    pos = labels.bool()
    only_pos = spread.masked_fill(~pos[:, None, :], float("-inf")).amax(-1)
    return torch.where(pos, only_pos, out)
