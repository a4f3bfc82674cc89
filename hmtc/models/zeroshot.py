"""Zero- and few-shot scoring from the taxonomy's own words: the encoder as a text-embedding model.

Node i is written as a passage, its display name (``label_text = "name"``) or the names along
its path from level 1 (``"path"``), and its description when the ``.tax`` file gives one
(``> text``)::

    p_i = passage_prefix + name_i [+ ": " + description_i]

and a text x as a query, ``query_prefix + x`` (the prefixes e5 encoders were trained with). Both
are mean-pooled over their tokens and L2-normalised, e(·). With training texts (``data.shots``)
a node's prototype mixes its passage with the mean of the texts that carry it (closed under
ancestors, so a parent pools its children's examples)::

    c_i = normalise((1 - w_i) · e(p_i) + w_i · normalise(mean_{x ∈ S_i} e(x))),
    w_i = examples when S_i is not empty, else 0

Scores are cosine similarities measured from the best leaf,

    s_ℓ(x) = scale · (cos(e(x), c_ℓ) - max_{leaf j} cos(e(x), c_j)) + margin,
    s_p(x) = max_{leaf ℓ under p} s_ℓ(x)                  (``parents = "children"``)

so the best leaf and its ancestors score ``margin`` (kept at threshold 0) and every other leaf
falls below it by ``scale`` times its gap in cosine. A parent is as likely as its likeliest
leaf: on DuEE the leaves' names place a text's event category better than the categories' own
names do (experiments/duee-fewshot.md). With ``parents = "own"`` every node is scored against
its own prototype instead, measured from the best node of its level. Evaluation tunes the threshold on whatever dev
split exists (none at K = 0: threshold 0, the best consistent path); a lower threshold keeps a
second node of a level when it is within ``(margin - t) / scale`` of the best. Nothing is
trained by gradient: ``hmtc train`` fits the prototypes in one pass (``one_pass``), in the time
it takes to embed the names and the training texts.

``model.name = "proto"`` starts there and learns from the K examples: the prototypes above are
its initial classifier rows (and, with ``parents = "own"``, its parents'), and the prototypes
and the encoder's trainable layers are fine-tuned with the loss e5 itself was trained with, a
softmax over the candidates at temperature 1/scale, here with every gold leaf of a text a
positive (the multi-positive cross-entropy of :class:`hmtc.losses.ExclusiveLoss`)::

    L = logsumexp_{ℓ ∈ leaves} scale · cos(e(x), c_ℓ) - mean_{ℓ ∈ gold(x)} scale · cos(e(x), c_ℓ)

(per level over the level's nodes with ``parents = "own"``). Scoring and decoding are those of
the zero-shot model, so K = 0 and K > 0 differ only in the prototypes and the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .base import MODELS, EncoderModel, ModelOutput, NodeRows
from .batches import iterate
from ..batching import length_batches, tokenize
from .constraint import constrain, descendant_mask
from .encoder import TextEncoder
from ..errors import ConfigError
from .label_init import label_texts
from ..losses import ExclusiveLoss
from ..taxonomy import TaxonomyIndex


@dataclass
class ZeroShotConfig:
    query_prefix: str = "query: "       # before every text (e5's convention; "" for other encoders)
    passage_prefix: str = "passage: "   # before every node's text
    label_text: str = "name"            # name: the node's own display name; path: the names from level 1 down
    parents: str = "children"           # children: a parent scores its best leaf; own: its own prototype
    examples: float = 0.5               # weight w of the training texts' mean in a prototype (0: names only)
    scale: float = 100.0                # logit units per unit of cosine (e5 trains at temperature 0.01)
    margin: float = 1.0                 # score of each level's best node

    def __post_init__(self):
        if self.label_text not in ("path", "name"):
            raise ConfigError(f"zeroshot label_text {self.label_text!r}: use path or name")
        if self.parents not in ("children", "own"):
            raise ConfigError(f"zeroshot parents {self.parents!r}: use children or own")
        if not 0 <= self.examples <= 1:
            raise ConfigError(f"zeroshot examples {self.examples!r}: a weight in [0, 1]")
        if not self.scale > 0:
            raise ConfigError(f"zeroshot scale {self.scale!r}: must be > 0")


def node_passages(index: TaxonomyIndex, config: ZeroShotConfig) -> list[str]:
    """Each node's passage ``p_i`` (module docstring), in column order."""
    texts = label_texts(index, config.label_text)
    descriptions = index.descriptions or ("",) * index.n_nodes
    return [config.passage_prefix + t + (f": {d}" if d else "") for t, d in zip(texts, descriptions)]


@MODELS.register("zeroshot")
class ZeroShotModel(EncoderModel):
    """Cosine similarity of a text to each node's prototype (see the module docstring).

    Attributes
    ----------
    prototypes : torch.nn.Parameter, shape (N, d)
        Unit rows ``c_i``, saved with the weights; fixed here, trained by :class:`ProtoModel`.
    """

    config_class = ZeroShotConfig
    one_pass = True
    needs_examples = False
    supports_cache = False

    def __init__(self, encoder: TextEncoder, index: TaxonomyIndex, config: ZeroShotConfig):
        super().__init__()
        self.encoder, self.index, self.config = encoder, index, config
        self.prototypes = torch.nn.Parameter(torch.zeros(index.n_nodes, encoder.hidden_size), requires_grad=False)
        self.register_buffer("leaf", torch.as_tensor(index.leaf_mask), persistent=False)
        self.register_buffer("under", torch.as_tensor(descendant_mask(index)), persistent=False)
        groups = ([np.flatnonzero(index.leaf_mask)] if config.parents == "children"
                  else [np.arange(sl.start, sl.stop) for sl in index.level_slices])
        padded = np.full((len(groups), max(len(g) for g in groups)), -1, dtype=np.int64)
        for i, g in enumerate(groups):
            padded[i, :len(g)] = g
        self.loss_fn = ExclusiveLoss(padded)
        self.eval()         # fitted, not trained: dropout off from the start (the trainer turns it on for proto)

    def node_rows(self) -> list[NodeRows]:
        return [NodeRows("prototype", "prototypes", 0, np.arange(self.index.n_nodes))]

    def name_rows(self, index: TaxonomyIndex) -> dict:
        """Each node's prototype from its passage alone (the names-only fit)."""
        return {"prototypes": F.normalize(self.embed(node_passages(index, self.config)), dim=1)}

    def forward_states(self, states: torch.Tensor, mask: torch.Tensor,
                       labels: torch.Tensor | None = None) -> ModelOutput:
        """Relative cosine scores (B, N); with ``labels``, the softmax loss of :class:`ProtoModel`."""
        cos = pool(states, mask).float() @ F.normalize(self.prototypes.float(), dim=1).T
        logits = self.relative_scores(cos)
        return ModelOutput(logits, None if labels is None else self.loss_fn(self.config.scale * cos, labels))

    def relative_scores(self, cos: torch.Tensor) -> torch.Tensor:
        """Scores (B, N) from cosines (B, N) as the module docstring writes them; a parent's best
        leaf is the max over its descendants (:func:`hmtc.models.constraint.constrain`)."""
        scale, margin = self.config.scale, self.config.margin
        if self.config.parents == "own":
            out = torch.empty_like(cos)
            for sl in self.index.level_slices:
                part = cos[:, sl]
                out[:, sl] = scale * (part - part.max(1, keepdim=True).values) + margin
            return out
        best = cos.masked_fill(~self.leaf, -torch.inf).max(1, keepdim=True).values
        return constrain((scale * (cos - best) + margin).masked_fill(~self.leaf, -torch.inf), self.under)

    @torch.no_grad()
    def embed(self, texts: Sequence[str], prefix: str = "") -> torch.Tensor:
        """Unit mean-pooled embeddings (len(texts), d) of ``prefix + text``, in input order, with
        dropout off."""
        ids = tokenize(self.tokenizer, [prefix + t for t in texts], self.max_length)
        out = torch.zeros(len(ids), self.encoder.hidden_size)
        pad = getattr(self.tokenizer, "pad_token_id", None) or 0
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        for b, x, mask, _ in iterate(ids, length_batches([len(t) for t in ids], self.eval_batch_size, False), pad):
            states, mask = self.encode(x.to(device), mask.to(device))
            out[torch.as_tensor(b)] = pool(states, mask).float().cpu()
        self.train(was_training)
        return out

    @torch.no_grad()
    def fit(self, texts: Sequence[str], labels: np.ndarray, seed: int = 0) -> "ZeroShotModel":
        """Prototypes from the nodes' passages and, with weight ``examples``, the texts that carry
        each node (``labels`` (S, N), closed under ancestors)."""
        names = self.embed(node_passages(self.index, self.config))
        w = self.config.examples
        if len(texts) and w > 0:
            y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
            sums = y.T @ self.embed(texts, self.config.query_prefix)          # (N, d)
            has = y.sum(0) > 0
            means = F.normalize(sums, dim=1)
            names[has] = (1 - w) * names[has] + w * means[has]
        self.prototypes.copy_(F.normalize(names, dim=1))
        return self

    @property
    def text_prefix(self) -> str:
        return self.config.query_prefix


def pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unit mean of the token states (B, T, d) over the mask (B, T): e5's text embedding."""
    m = mask.unsqueeze(-1).to(states.dtype)
    return F.normalize((states * m).sum(1) / m.sum(1).clamp_min(1), dim=-1)


@MODELS.register("proto")
class ProtoModel(ZeroShotModel):
    """The zero-shot model's prototypes fine-tuned, with the encoder, on the K examples (see the
    module docstring): ``prototypes`` is a parameter, set from names and examples before training
    (:meth:`init_from_data`)."""

    one_pass = False
    needs_examples = True
    supports_cache = True

    def __init__(self, encoder: TextEncoder, index: TaxonomyIndex, config: ZeroShotConfig):
        super().__init__(encoder, index, config)
        self.prototypes.requires_grad_(True)

    def init_from_data(self, texts: Sequence[str], labels: np.ndarray) -> None:
        """Prototypes from the names and the training texts, as the zero-shot model fits them."""
        self.fit(texts, labels)
