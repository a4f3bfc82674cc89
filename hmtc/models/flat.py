"""Flat baseline: one multi-label head over the leaves; ancestors are implied.

    v = Head(H)                 pooled text vector (cls, mean, attention, bilstm, textcnn)
    z_leaf = W dropout(v) + b   one logit per leaf
    z_i = max_{leaf ℓ under i} z_ℓ   for an internal node i (it is predicted when any leaf is)

With ``head = "label_token"`` one learned token per leaf is appended to the text instead and

    z_ℓ = w_ℓ · dropout(h_ℓ) + b_ℓ    h_ℓ the final state of leaf ℓ's token (see LabelTokens)

The loss (any of ``LOSSES``) sees only the leaves; decoding then runs on the full score matrix,
so flat predictions get the same consistent decoding and metrics as every other model.

Exclusive sibling groups of the taxonomy add ``L_excl(z, y)`` (:class:`hmtc.losses.ExclusiveLoss`)
on the node logits above, the very scores decoding compares: a group of leaves competes on its
leaf logits, and a group of internal nodes on each child's ``max`` over its leaves, so the
gradient reaches each child's best leaf.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import TextSpec
from ..errors import ConfigError
from ..losses import build_loss, exclusive_loss
from ..taxonomy import TaxonomyIndex
from .base import MODELS, EncoderModel, ModelOutput, NodeRows
from .encoder import TextEncoder
from .heads import HEADS


@dataclass
class FlatConfig:
    head: str = "mean"
    head_options: dict = field(default_factory=dict)
    dropout: float = 0.1
    loss: str = "zlpr"
    loss_options: dict = field(default_factory=dict)
    label_init: str = ""          # "name" / "path": leaf rows from the labels' texts (hmtc.models.label_init)


class LabelTokens(nn.Module):
    """One learned token per label, appended to the text's word embeddings; one logit per token.

    The encoder reads ``[word embeddings of the text ; e_1 .. e_L]`` with the attention mask
    extended by ones and label positions continuing after each text's own length (so padding
    does not move them); label ℓ's logit is ``w_ℓ · h_ℓ + b_ℓ``, a dot product with its own
    token's final state. Any model with a :class:`TextEncoder` can use it.

    Parameters
    ----------
    hidden : int
        The encoder's width.
    n_labels : int
        One token (and one logit) per label.
    """

    def __init__(self, hidden: int, n_labels: int):
        super().__init__()
        self.embed = nn.Embedding(n_labels, hidden)
        nn.init.normal_(self.embed.weight, std=0.02)      # the scale of BERT's word embeddings
        self.out = nn.Linear(hidden, n_labels)              # row ℓ is w_ℓ

    def states(self, encoder: TextEncoder, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final states (B, L, d) of the label tokens."""
        (b, t), n = input_ids.shape, self.embed.num_embeddings
        # RoBERTa-style embeddings count positions from padding_idx + 1, BERT from 0
        start = getattr(getattr(encoder.backbone, "embeddings", None), "padding_idx", -1) + 1
        limit = encoder.backbone.config.max_position_embeddings
        if start + t + n > limit:
            raise ConfigError(f"label_token: {t} text tokens + {n} labels exceed the encoder's {limit} "
                              "positions; lower data.max_length")
        words = encoder.backbone.get_input_embeddings()(input_ids)              # hooked by FGM / GP
        embeds = torch.cat([words, self.embed.weight.to(words.dtype).expand(b, n, -1)], 1)
        mask = torch.cat([attention_mask, attention_mask.new_ones(b, n)], 1)
        text_pos = torch.arange(t, device=input_ids.device).expand(b, t)
        label_pos = attention_mask.sum(1, keepdim=True) + torch.arange(n, device=input_ids.device)
        positions = start + torch.cat([text_pos, label_pos], 1)
        return encoder(None, mask, inputs_embeds=embeds, position_ids=positions)[:, t:]

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Logits (B, L) from the label tokens' states (B, L, d)."""
        return torch.einsum("bld,ld->bl", states, self.out.weight) + self.out.bias


@MODELS.register("flat")
class FlatModel(EncoderModel):
    """Leaves-only multi-label classifier over a pooled encoder output (see module docstring)."""

    config_class = FlatConfig

    def __init__(self, encoder: TextEncoder, index: TaxonomyIndex, config: FlatConfig):
        super().__init__()
        self.encoder, self.config = encoder, config
        self.dropout = nn.Dropout(config.dropout)
        leaves = torch.as_tensor(index.leaf_mask.nonzero()[0])
        self.register_buffer("leaves", leaves, persistent=False)
        if config.head == "label_token":
            self.label_tokens = LabelTokens(encoder.hidden_size, len(leaves), **config.head_options)
        else:
            self.head = HEADS.get(config.head)(encoder.hidden_size, **config.head_options)
            self.classifier = nn.Linear(self.head.out_dim, len(leaves))
        # (N, n_leaves) membership: node i is "leaf ℓ or an ancestor of ℓ"
        under = index.ancestors[index.leaf_mask].T.copy()
        under[leaves.numpy(), range(len(leaves))] = True
        self.register_buffer("under", torch.as_tensor(under), persistent=False)
        self.loss_fn = build_loss(config.loss, config.loss_options, columns=leaves.numpy())
        self.group_loss = exclusive_loss(index)

    @property
    def supports_cache(self) -> bool:
        return self.config.head != "label_token"

    def set_text(self, text: TextSpec) -> None:
        super().set_text(text)
        if self.windows is not None and self.config.head == "label_token":
            raise ConfigError("the label_token head reads a text and its labels in one sequence: no model.windows")

    def forward(self, input_ids, attention_mask, labels=None, *, lower_states=None) -> ModelOutput:
        if self.config.head == "label_token":   # the label tokens change the encoder's input
            z = self.label_tokens(self.dropout(self.label_tokens.states(self.encoder, input_ids, attention_mask)))
            return self.leaf_output(z, labels)
        return super().forward(input_ids, attention_mask, labels, lower_states=lower_states)

    def node_rows(self) -> list[NodeRows]:
        """The leaves' classifier rows and biases (with the label_token head, their tokens too)."""
        leaves = self.leaves.cpu().numpy()
        if self.config.head == "label_token":
            return [NodeRows("token", "label_tokens.embed.weight", 0, leaves),
                    NodeRows("classifier.weight", "label_tokens.out.weight", 0, leaves),
                    NodeRows("classifier.bias", "label_tokens.out.bias", 0, leaves)]
        return [NodeRows("classifier.weight", "classifier.weight", 0, leaves),
                NodeRows("classifier.bias", "classifier.bias", 0, leaves)]

    def name_rows(self, index: TaxonomyIndex) -> dict:
        return {} if self.config.head == "label_token" else super().name_rows(index)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list:
        """The classifier and the pooled vector it sees for every text (label and example
        initialisation, :mod:`hmtc.models.label_init`)."""
        if self.config.head == "label_token":
            raise ConfigError("label_init does not apply to the label_token head (it learns label tokens)")
        return [(self.classifier, self.head(*self.encode(input_ids, attention_mask)))]

    def label_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list:
        """For label-name initialisation: the classifier and the pooled vectors of the leaves' texts."""
        return [(clf, v[self.leaves]) for clf, v in self.text_features(input_ids, attention_mask)]

    def forward_states(self, states, attention_mask, labels=None) -> ModelOutput:
        return self.leaf_output(self.classifier(self.dropout(self.head(states, attention_mask))), labels)

    def leaf_output(self, z: torch.Tensor, labels=None) -> ModelOutput:
        """Node logits (B, N) and the loss from the leaf logits ``z`` (B, L)."""
        z = z.float()
        logits = z[:, None, :].masked_fill(~self.under[None], float("-inf")).amax(-1)   # (B, N)
        loss = None if labels is None else self.loss_fn(z, labels[:, self.leaves])
        if labels is not None and self.group_loss is not None:
            loss = loss + self.group_loss(logits, labels)
        return ModelOutput(logits=logits, loss=loss)
