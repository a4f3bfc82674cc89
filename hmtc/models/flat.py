"""Flat baseline: one multi-label head over the leaves; ancestors are implied.

    v = Head(H)                 pooled text vector (cls, mean, attention, bilstm, textcnn)
    z_leaf = W dropout(v) + b   one logit per leaf
    z_i = max_{leaf ℓ under i} z_ℓ   for an internal node i (it is predicted when any leaf is)

The loss (ZLPR or BCE) sees only the leaves; decoding then runs on the full score matrix, so
flat predictions get the same consistent decoding and metrics as every other model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..losses import LOSSES
from ..taxonomy import TaxonomyIndex
from . import MODELS, ModelOutput
from .encoder import TextEncoder
from .heads import HEADS


@dataclass
class FlatConfig:
    head: str = "mean"
    head_options: dict = field(default_factory=dict)
    dropout: float = 0.1
    loss: str = "zlpr"

    def to_dict(self) -> dict:
        return asdict(self)


@MODELS.register("flat")
class FlatModel(nn.Module):
    """Leaves-only multi-label classifier over a pooled encoder output (see module docstring)."""

    config_class = FlatConfig

    def __init__(self, encoder: TextEncoder, index: TaxonomyIndex, config: FlatConfig):
        super().__init__()
        self.encoder, self.config = encoder, config
        self.head = HEADS.get(config.head)(encoder.hidden_size, **config.head_options)
        self.dropout = nn.Dropout(config.dropout)
        leaves = torch.as_tensor(index.leaf_mask.nonzero()[0])
        self.register_buffer("leaves", leaves, persistent=False)
        self.classifier = nn.Linear(self.head.out_dim, len(leaves))
        # (N, n_leaves) membership: node i is "leaf ℓ or an ancestor of ℓ"
        under = index.ancestors[index.leaf_mask].T.copy()
        under[leaves.numpy(), range(len(leaves))] = True
        self.register_buffer("under", torch.as_tensor(under), persistent=False)
        self.loss_fn = LOSSES.get(config.loss)

    def head_parameters(self) -> list[nn.Parameter]:
        enc = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in enc and p.requires_grad]

    def forward(self, input_ids, attention_mask, labels=None) -> ModelOutput:
        return self.forward_states(self.encoder(input_ids, attention_mask), attention_mask, labels)

    def forward_states(self, states, attention_mask, labels=None) -> ModelOutput:
        z = self.classifier(self.dropout(self.head(states, attention_mask))).float()     # (B, L)
        logits = z[:, None, :].masked_fill(~self.under[None], float("-inf")).amax(-1)   # (B, N)
        loss = None if labels is None else self.loss_fn(z, labels[:, self.leaves])
        return ModelOutput(logits=logits, loss=loss)
