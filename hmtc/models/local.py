"""Local classifier per parent node (LCPN), multi-label, as one linear layer.

Every edge ``(p, c)`` of the taxonomy (the root counts as the parent of level-1 nodes) has one
classifier row; rows are grouped by parent, so the rows of ``p`` are ``p``'s local classifier
over its children:

    v = Head(H)                           pooled text vector
    z_{p,c} = w_{p,c} · dropout(v) + b_{p,c}
    σ(z_{p,c}) = P(c | p, text)           each child scored on its own (multi-label)

Training: the loss (BCE by default, or any of ``LOSSES``) of row ``(p, c)`` counts only the
samples where ``p`` is gold-positive (root rows: every sample), through the losses' ``mask``.
BCE is the default because the path product below wants calibrated probabilities; ZLPR only
ranks around 0, and a product of several σ(z) barely above 0.5 falls below it.

An exclusive parent's rows (``!exclusive`` in the taxonomy, the root's included) are its local
classifier over mutually exclusive children: they also get the softmax cross-entropy
``L_excl`` (:class:`hmtc.losses.ExclusiveLoss`) on the edge logits ``z_{p,c}``, counted where a
child is gold-positive (so ``p`` is too), added to the per-row loss.

Output: the logit of the path probability (:mod:`hmtc.models.paths`), with
``P(c | p) = σ(z_{p,c})`` on edge ``(p, c)``::

    log p(c) = min_{p ∈ parents(c)} [log σ(z_{p,c}) + log p(p)],    log p(root) = 0

so ``logit(c) ≤ logit(p)`` for every edge and thresholding the logits with one global threshold
is already consistent: top-down decoding removes nothing (and ``closure`` adds nothing). Every
decoder applies as for any other model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..losses import build_loss, exclusive_loss
from ..taxonomy import TaxonomyIndex
from .base import MODELS, EncoderModel, ModelOutput
from .encoder import TextEncoder
from .heads import HEADS
from .paths import path_logits


@dataclass
class LocalConfig:
    head: str = "mean"
    head_options: dict = field(default_factory=dict)
    dropout: float = 0.1
    loss: str = "bce"
    loss_options: dict = field(default_factory=dict)   # keyword options of the loss (build_loss)


def edges_by_parent(index: TaxonomyIndex) -> tuple[np.ndarray, np.ndarray]:
    """(parent, child) of every edge, the root written as ``N``, sorted by parent (root first)."""
    n = index.n_nodes
    top = np.flatnonzero(index.n_parents == 0)
    child = np.concatenate([top, np.repeat(np.arange(n), index.n_parents)])
    parent = np.concatenate([np.full(len(top), n), index.parent_idx])
    order = np.lexsort((child, np.where(parent == n, -1, parent)))
    return parent[order], child[order]


def group_edges(index: TaxonomyIndex, parent: np.ndarray, child: np.ndarray) -> np.ndarray:
    """Edge rows of ``index.exclusive_children``: row ``(p, c)`` for child ``c`` of group ``p`` (the
    root written as ``N``, as in :func:`edges_by_parent`), padded with -1 like the groups."""
    row = {(p, c): e for e, (p, c) in enumerate(zip(parent.tolist(), child.tolist()))}
    n = index.n_nodes
    heads = np.where(index.exclusive_parent >= 0, index.exclusive_parent, n).tolist()
    return np.array([[row[p, c] if c >= 0 else -1 for c in kids]
                     for p, kids in zip(heads, index.exclusive_children.tolist())], dtype=np.int64)


@MODELS.register("local")
class LocalModel(EncoderModel):
    """LCPN over a pooled encoder output; logits are path-probability logits (see module docstring)."""

    config_class = LocalConfig

    @classmethod
    def path_scores(cls, options: dict) -> bool:
        return True

    def __init__(self, encoder: TextEncoder, index: TaxonomyIndex, config: LocalConfig):
        super().__init__()
        self.encoder, self.config = encoder, config
        self.head = HEADS.get(config.head)(encoder.hidden_size, **config.head_options)
        self.dropout = nn.Dropout(config.dropout)
        parent, child = edges_by_parent(index)
        self.classifier = nn.Linear(self.head.out_dim, len(child))      # one row per edge
        # each node's incoming edges, padded: (N, max parents), -1 = none
        n = index.n_nodes
        counts = np.bincount(child, minlength=n)
        by_child = np.argsort(child, kind="stable")
        slot = np.arange(len(child)) - np.repeat(np.cumsum(counts) - counts, counts)   # k-th edge of its child
        edge_pad = np.full((n, counts.max()), -1, dtype=np.int64)
        edge_pad[child[by_child], slot] = by_child
        valid = edge_pad >= 0
        for name, arr in (("edge_parent", parent), ("edge_child", child), ("valid", valid),
                          ("edge_pad", np.where(valid, edge_pad, 0)),
                          ("parent_pad", np.where(valid, parent[np.where(valid, edge_pad, 0)], n))):
            self.register_buffer(name, torch.as_tensor(arr), persistent=False)
        self.slices = index.level_slices
        # the loss's label columns are the edges' children (a prior-fitted loss sees P(c))
        self.loss_fn = build_loss(config.loss, config.loss_options, columns=child)
        self.group_loss = exclusive_loss(index, group_edges(index, parent, child))

    def forward_states(self, states, attention_mask, labels=None) -> ModelOutput:
        z = self.classifier(self.dropout(self.head(states, attention_mask))).float()    # (B, E)
        loss = None if labels is None else self.local_loss(z, labels)
        return ModelOutput(logits=self.path_logits(z), loss=loss)

    def local_loss(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of the edge logits ``z`` (B, E): row ``(p, c)`` counts where ``p`` is gold-positive."""
        y = torch.cat([labels.bool(), labels.new_ones(len(labels), 1, dtype=torch.bool)], 1)  # root: on
        loss = self.loss_fn(z, y[:, self.edge_child], y[:, self.edge_parent])
        return loss if self.group_loss is None else loss + self.group_loss(z, labels)

    def path_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits (B, N) of the path probabilities from the edge logits ``z`` (B, E)."""
        ls = F.logsigmoid(z)
        return path_logits(lambda sl: ls[:, self.edge_pad[sl]], self.parent_pad, self.valid, self.slices, z)
