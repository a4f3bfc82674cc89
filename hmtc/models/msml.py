"""MSML-BERT: a shared encoder, one multi-scale TextCNN tower per level, hierarchical gates.

For token states ``H`` (B, T, d) from the encoder (a learned mix of chosen layers):

    t_l = Tower_l(H)                            multi-scale TextCNN, kernels K_l (wider above)
        = GELU(W_l [maxpool_T GELU(conv_k(R_l H)) for k in K_l ; meanpool_T(H)])
                                                R_l: a linear map to conv_dim channels, or none
    h_1 = t_1
    m_l = h_{l-1} + E_{l-1} σ(z_{l-1})          level l-1's state plus its predicted labels
    g_l = σ(W_g^l [t_l ; m_l] + b_g^l)          hierarchical gate (l > 1)
    h_l = g_l ⊙ t_l + (1 - g_l) ⊙ tanh(W_p^l m_l)
    z_l = C_l dropout(h_l)                      logits of level l's nodes

    loss = Σ_l w_l · L(z_l, y_l)                L = ZLPR (decide z > 0), BCE or any of LOSSES
           + L_excl(z, y)                       exclusive sibling groups of the taxonomy, if any
                                                (hmtc.losses.ExclusiveLoss; no level weight: a
                                                DAG's group may span levels)

With ``constrained = true`` the concatenated logits pass through C-HMCNN's max constraint
(:mod:`hmtc.models.constraint`): the output is ẑ_i = max over i and its descendants, and the loss
is taken on MCLoss's ẑʸ (L_excl too), so the scores are consistent before any decoding.

With ``conditional = true`` a level below the first is trained as the local classifier is
(:mod:`hmtc.models.local`): σ(z_c) = P(c | parents, text), its loss counted only where every
parent of ``c`` is gold-positive (level 1: every sample; in a tree, its one parent), and the
output is the path-probability logit (:mod:`hmtc.models.paths`)::

    log p(c) = min_{p ∈ parents(c)} [log σ(z_c) + log p(p)],    log p(root) = 0

so a child's classifier learns to tell its siblings apart among the texts of its parent, where a
rare leaf is less rare, and the output is consistent before decoding. Because the product wants
calibrated probabilities, it refuses ZLPR (which only ranks around 0): use ``loss = "bce"``.
Exclusive groups take L_excl on the conditional logits z, as in the local classifier. Label
feedback still reads σ(z_{l-1}), conditional scores from level 2 on (the same at training and
at inference, so the gate learns what they mean).

Ablations (each a config option; the defaults are the model above): ``gates = false`` classifies
every level from its own tower (h_l = t_l); ``label_feedback = false`` drops E_{l-1} σ(z_{l-1});
``shared_tower = true`` computes one tower t (level 1's kernels) and feeds it to every level
(t_l = t); one kernel size everywhere is ``kernels = [[3], [3]]``.

Levels are the compiled taxonomy's levels (longest path from the root), so ragged depths and
DAGs need nothing special: every node belongs to exactly one level, and the concatenated
``z_1 .. z_D`` line up with the index's columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..losses import build_loss, exclusive_loss
from ..taxonomy import TaxonomyIndex
from .base import MODELS, EncoderModel, ModelOutput, NodeRows
from .constraint import constrain, descendant_mask
from .encoder import TextEncoder
from .label_init import MODES
from .paths import parent_slots, path_logits


def default_kernels(depth: int) -> list[list[int]]:
    """Kernel sizes per level, widest at the top: (3, 5, 7), (1, 3, 5), (1, 3), (1), ..."""
    out = []
    for level in range(depth):
        width = max(1, 7 - 2 * level)
        out.append(sorted({max(1, width - 4), max(1, width - 2), width}))
    return out


@dataclass
class MSMLConfig:
    """Hyper-parameters of :class:`MSMLModel` (stored as JSON in checkpoints)."""

    kernels: list[list[int]] | None = None   # per level; None: default_kernels(depth)
    filters: int = 128                       # channels per kernel size
    tower_dim: int = 384
    conv_dim: int | None = None              # token states mapped to this width before the convolutions
    dropout: float = 0.1
    loss: str = "zlpr"
    loss_options: dict = field(default_factory=dict)  # keyword options of the loss (build_loss)
    level_weights: list[float] | None = None  # None: 1 per level
    label_feedback: bool = True               # feed σ(z_{l-1}) into the gate
    gates: bool = True                        # False: each level classified from its own tower
    shared_tower: bool = False                # True: one tower (level 1's kernels) for every level
    constrained: bool = False                 # C-HMCNN: max over descendants, loss on MCLoss's outputs
    label_init: str = ""                      # "name" / "path": classifier rows from the labels' texts
    conditional: bool = False                 # P(c | parents) per node, parent-masked loss, path logits

    def __post_init__(self):
        checks = [("kernels", self.kernels is None or all(k and all(w >= 1 for w in k) for k in self.kernels),
                   "a list of non-empty lists of kernel widths >= 1"),
                  ("filters", self.filters >= 1, ">= 1"), ("tower_dim", self.tower_dim >= 1, ">= 1"),
                  ("conv_dim", self.conv_dim is None or self.conv_dim >= 1, ">= 1"),
                  ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
                  ("label_init", self.label_init in MODES, f"one of {', '.join(map(repr, MODES))}")]
        for key, ok, want in checks:
            if not ok:
                raise ConfigError(f"model.options.{key}: expected {want}, got {getattr(self, key)!r}")
        if self.conditional and self.constrained:
            raise ConfigError("model.options: conditional and constrained are two ways to consistent "
                              "scores; choose one")
        if self.conditional and self.loss == "zlpr":
            raise ConfigError("model.options.conditional multiplies probabilities down the path; ZLPR "
                              "scores only rank around 0: set model.options.loss = \"bce\"")


class TextCNNTower(nn.Module):
    """Multi-scale TextCNN over token states with masked max-pooling, plus a mean-pool path.

    ``matmul_taps = True`` computes the same convolutions as one matrix product over every
    kernel's taps followed by shifted sums; ``hmtc export`` sets it, because ONNX Runtime runs
    that product in int8 while it keeps convolutions in slow fp32.
    """

    matmul_taps = False

    def __init__(self, hidden: int, kernels: Sequence[int], filters: int, out_dim: int, dropout: float,
                 conv_dim: int | None = None):
        super().__init__()
        # a narrower input cuts the convolutions' cost by hidden / conv_dim (they read every token)
        self.reduce = nn.Linear(hidden, conv_dim) if conv_dim else None
        self.convs = nn.ModuleList(nn.Conv1d(conv_dim or hidden, filters, k, padding=k // 2) for k in kernels)
        self.proj = nn.Linear(filters * len(kernels) + hidden, out_dim)
        self.dropout = nn.Dropout(dropout)

    def _tap_products(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each convolution's output (B, T, filters) for zero-padded states ``x`` (B, T, d), from
        one product with all taps: tap j of a width-k kernel reads token t + j - k // 2."""
        taps = torch.cat([c.weight[:, :, j].t() for c in self.convs for j in range(c.kernel_size[0])], 1)
        z, t, start, out = x @ taps, x.shape[1], 0, []
        for c in self.convs:
            k, p, f = c.kernel_size[0], c.padding[0], c.out_channels
            zk = F.pad(z[..., start: start + k * f], (0, 0, p, p))        # (B, T + 2p, k·f)
            out.append(sum(zk[:, j: j + t, j * f: (j + 1) * f] for j in range(k)) + c.bias)
            start += k * f
        return out

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pad = ~mask.bool()[:, None, :]
        x = states if self.reduce is None else self.reduce(states)
        # pad states are zeroed so a text's features do not depend on its batch's padding
        x = x.transpose(1, 2).masked_fill(pad, 0.0)             # (B, d, T)
        t = states.shape[1]
        if self.matmul_taps:
            feats = [F.gelu(y).masked_fill(pad.transpose(1, 2), float("-inf")).amax(1)
                     for y in self._tap_products(x.transpose(1, 2))]
        else:
            feats = [F.gelu(conv(x)[..., :t]).masked_fill(pad, float("-inf")).amax(-1) for conv in self.convs]
        m = mask.to(states.dtype)[..., None]
        feats.append((states * m).sum(1) / m.sum(1).clamp_min(1.0))
        return self.dropout(F.gelu(self.proj(torch.cat(feats, -1))))


class HierarchicalGate(nn.Module):
    """Fuse level l's tower output with what level l-1 passes down (its state and predictions)."""

    def __init__(self, dim: int, n_prev_labels: int, label_feedback: bool):
        super().__init__()
        self.feedback = nn.Linear(n_prev_labels, dim, bias=False) if label_feedback else None
        self.gate = nn.Linear(2 * dim, dim)
        self.pass_down = nn.Linear(dim, dim)

    def forward(self, own: torch.Tensor, prev: torch.Tensor, prev_logits: torch.Tensor) -> torch.Tensor:
        m = prev if self.feedback is None else prev + self.feedback(torch.sigmoid(prev_logits))
        g = torch.sigmoid(self.gate(torch.cat([own, m], -1)))
        return g * own + (1 - g) * torch.tanh(self.pass_down(m))


@MODELS.register("msml")
class MSMLModel(EncoderModel):
    """Multi-scale, multi-level model over a shared encoder (see the module docstring).

    Parameters
    ----------
    encoder : TextEncoder
    index : TaxonomyIndex
        The compiled taxonomy; fixes the levels and the column order of the logits.
    config : MSMLConfig
    """

    config_class = MSMLConfig

    @classmethod
    def path_scores(cls, options: dict) -> bool:
        return bool(options.get("conditional", False))

    def __init__(self, encoder: TextEncoder, index: TaxonomyIndex, config: MSMLConfig):
        super().__init__()
        self.encoder, self.config = encoder, config
        self.slices = index.level_slices
        sizes = [s.stop - s.start for s in self.slices]
        kernels = config.kernels or default_kernels(len(sizes))
        if len(kernels) < len(sizes):       # a deeper taxonomy than configured: reuse the last
            kernels = list(kernels) + [kernels[-1]] * (len(sizes) - len(kernels))
        d = config.tower_dim
        kernels = kernels[:1] if config.shared_tower else kernels[: len(sizes)]
        self.towers = nn.ModuleList(TextCNNTower(encoder.hidden_size, k, config.filters, d, config.dropout,
                                                 config.conv_dim)
                                    for k in kernels)
        self.gates = nn.ModuleList(HierarchicalGate(d, n_prev, config.label_feedback) for n_prev in sizes[:-1]) \
            if config.gates else None
        self.dropout = nn.Dropout(config.dropout)
        self.classifiers = nn.ModuleList(nn.Linear(d, n) for n in sizes)
        if config.level_weights is not None and len(config.level_weights) != len(sizes):
            raise ConfigError(f"model.options.level_weights has {len(config.level_weights)} weights for "
                              f"{len(sizes)} levels")
        self.level_weights = config.level_weights or [1.0] * len(sizes)
        # one loss per level: a loss that learns label priors reads its own level's columns
        self.losses = nn.ModuleList(build_loss(config.loss, config.loss_options, columns=sl) for sl in self.slices)
        self.group_loss = exclusive_loss(index)
        if config.constrained:
            self.register_buffer("under", torch.as_tensor(descendant_mask(index)), persistent=False)
        if config.conditional:
            parents, valid = parent_slots(index)
            self.register_buffer("parent_pad", torch.as_tensor(parents), persistent=False)
            self.register_buffer("valid", torch.as_tensor(valid), persistent=False)

    def node_rows(self) -> list[NodeRows]:
        """Each level's classifier rows and biases, and with label feedback the columns of E_l."""
        out = []
        for level, sl in enumerate(self.slices):
            nodes = np.arange(sl.start, sl.stop)
            out += [NodeRows("classifier.weight", f"classifiers.{level}.weight", 0, nodes),
                    NodeRows("classifier.bias", f"classifiers.{level}.bias", 0, nodes)]
            if level > 0 and self.gates is not None and self.gates[level - 1].feedback is not None:
                prev = self.slices[level - 1]
                out.append(NodeRows("feedback", f"gates.{level - 1}.feedback.weight", 1,
                                    np.arange(prev.start, prev.stop)))
        return out

    def level_states(self, states: torch.Tensor, attention_mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(h_l, z_l) of every level: the state its classifier reads and its logits."""
        out, h, z = [], None, None
        shared = self.towers[0](states, attention_mask) if self.config.shared_tower else None
        for level, clf in enumerate(self.classifiers):
            t = shared if shared is not None else self.towers[level](states, attention_mask)
            h = t if level == 0 or self.gates is None else self.gates[level - 1](t, h, z)
            z = clf(self.dropout(h))
            out.append((h, z))
        return out

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list:
        """Each level's classifier and the h_l it sees for every text (label and example
        initialisation, :mod:`hmtc.models.label_init`)."""
        levels = self.level_states(*self.encode(input_ids, attention_mask))
        return [(clf, h) for clf, (h, _) in zip(self.classifiers, levels)]

    def label_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list:
        """For label-name initialisation: each level's classifier and h_l of its own nodes' texts."""
        return [(clf, h[sl]) for (clf, h), sl in zip(self.text_features(input_ids, attention_mask), self.slices)]

    def forward_states(self, states: torch.Tensor, attention_mask: torch.Tensor,
                       labels: torch.Tensor | None = None) -> ModelOutput:
        """Everything above the encoder (also used on cached encoder states)."""
        logits = torch.cat([z for _, z in self.level_states(states, attention_mask)], -1).float()
        loss = None
        if labels is not None:
            fit = constrain(logits, self.under, labels) if self.config.constrained else logits
            mask = self.parent_positive(labels) if self.config.conditional else None
            loss = sum(w * loss_fn(fit[:, sl], labels[:, sl], None if mask is None else mask[:, sl])
                       for w, loss_fn, sl in zip(self.level_weights, self.losses, self.slices))
            if self.group_loss is not None:
                loss = loss + self.group_loss(fit, labels)
        if self.config.constrained:
            logits = constrain(logits, self.under)
        if self.config.conditional:
            ls = F.logsigmoid(logits)
            logits = path_logits(lambda sl: ls[:, sl, None], self.parent_pad, self.valid, self.slices, logits)
        return ModelOutput(logits=logits, loss=loss)

    def parent_positive(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, N): every parent of the node is gold-positive (always, for level 1). In a DAG a
        text with only some of them holds no ``c`` (labels are closed under ancestors), and the
        path product already scores it by the smallest parent."""
        y = torch.cat([labels.bool(), labels.new_ones(len(labels), 1, dtype=torch.bool)], 1)   # root: on
        return (y[:, self.parent_pad] | ~self.valid).all(-1)
