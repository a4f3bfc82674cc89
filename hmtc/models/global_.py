"""Global baseline: one multi-label head over every node, with recursive regularisation.

    v = Head(H)                 pooled text vector (cls, mean, attention, bilstm, textcnn)
    z = W dropout(v) + b        one logit per node, W of shape (N, d)
    loss = L(z, y) + λ/2 Σ_{(p, c) ∈ E} ||w_p − w_c||²

``E`` holds every parent -> child edge below the root (the root has no classifier row), so a
child's weights are pulled towards its parent's (recursive regularisation, Gopal & Yang 2013);
in a DAG a node is pulled towards each of its parents. Biases are not regularised.
``L`` is ZLPR, BCE or any registered loss, over all N nodes; a taxonomy with exclusive sibling
groups adds their softmax cross-entropy ``L_excl(z, y)`` (:class:`hmtc.losses.ExclusiveLoss`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..losses import build_loss, exclusive_loss
from ..taxonomy import TaxonomyIndex
from .base import MODELS, EncoderModel, ModelOutput, NodeRows
from .encoder import TextEncoder
from .heads import HEADS


@dataclass
class GlobalConfig:
    head: str = "mean"
    head_options: dict = field(default_factory=dict)
    dropout: float = 0.1
    loss: str = "zlpr"
    loss_options: dict = field(default_factory=dict)   # keyword options of the loss (build_loss)
    recursive_reg: float = 1e-4     # λ of the parent/child weight penalty (0: off)


@MODELS.register("global")
class GlobalModel(EncoderModel):
    """One classifier row per node over a pooled encoder output (see the module docstring)."""

    config_class = GlobalConfig

    def __init__(self, encoder: TextEncoder, index: TaxonomyIndex, config: GlobalConfig):
        super().__init__()
        self.encoder, self.config = encoder, config
        self.head = HEADS.get(config.head)(encoder.hidden_size, **config.head_options)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(self.head.out_dim, index.n_nodes)
        # edge list from the CSR parent arrays: child i repeated once per parent
        child = np.repeat(np.arange(index.n_nodes), index.n_parents)
        self.register_buffer("edge_child", torch.as_tensor(child), persistent=False)
        self.register_buffer("edge_parent", torch.as_tensor(index.parent_idx.copy()), persistent=False)
        self.loss_fn = build_loss(config.loss, config.loss_options)
        self.group_loss = exclusive_loss(index)

    def node_rows(self) -> list[NodeRows]:
        """Every node's classifier row and bias."""
        nodes = np.arange(self.classifier.out_features)
        return [NodeRows("classifier.weight", "classifier.weight", 0, nodes),
                NodeRows("classifier.bias", "classifier.bias", 0, nodes)]

    def recursive_penalty(self) -> torch.Tensor:
        """``λ/2 Σ_{(p, c)} ||w_p − w_c||²`` over all parent/child edges below the root."""
        w = self.classifier.weight.float()
        diff = w[self.edge_parent] - w[self.edge_child]
        return 0.5 * self.config.recursive_reg * diff.pow(2).sum()

    def forward_states(self, states, attention_mask, labels=None) -> ModelOutput:
        logits = self.classifier(self.dropout(self.head(states, attention_mask))).float()   # (B, N)
        loss = None
        if labels is not None:
            loss = self.loss_fn(logits, labels)
            if self.group_loss is not None:
                loss = loss + self.group_loss(logits, labels)
            if self.config.recursive_reg:
                loss = loss + self.recursive_penalty()
        return ModelOutput(logits=logits, loss=loss)
