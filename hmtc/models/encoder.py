"""The shared text encoder: any transformers model, a learned mix of chosen hidden layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import AutoModel
from transformers.utils import logging as hf_logging

from ..encoders import resolve_encoder
from ..errors import ConfigError

try:
    from transformers.masking_utils import create_bidirectional_mask
except ImportError:               # transformers 4.x
    create_bidirectional_mask = None


class TextEncoder(nn.Module):
    """Wrap a transformers encoder and return token states mixed from chosen layers.

    Parameters
    ----------
    backbone : transformers.PreTrainedModel
        A BERT-like encoder (``hidden_states`` output, ``config.hidden_size``).
    layers : sequence of int
        Indices into ``hidden_states`` (0 = embeddings, -1 = last layer) mixed with learned
        softmax weights (a scalar mix); one index uses that layer as is.
    freeze_embeddings : bool
        Keep the word embeddings fixed: they hold most of a multilingual model's parameters
        and barely move in fine-tuning, and freezing them saves their optimizer cost.
    freeze_layers : int
        Keep the lowest N transformer layers fixed as well.
    """

    def __init__(self, backbone: nn.Module, layers: Sequence[int] = (-1,),
                 freeze_embeddings: bool = True, freeze_layers: int = 0):
        super().__init__()
        self.backbone = backbone
        self.layers = list(layers)
        depth = getattr(backbone.config, "num_hidden_layers", None)
        bad = [i for i in self.layers if depth is not None and not -(depth + 1) <= i <= depth]
        if bad:
            raise ConfigError(f"model.layers: {bad[0]} is not a hidden layer of this encoder "
                              f"(0..{depth}, or -1..-{depth + 1} from the top)")
        self.hidden_size = backbone.config.hidden_size
        self.mix = nn.Parameter(torch.zeros(len(self.layers))) if len(self.layers) > 1 else None
        self.freeze_layers = freeze_layers
        emb = getattr(backbone, "embeddings", None)
        if freeze_embeddings and emb is not None:
            emb.word_embeddings.weight.requires_grad_(False)
        blocks = self.blocks()
        for block in blocks[:freeze_layers]:
            block.requires_grad_(False)
        if freeze_layers and emb is not None:
            emb.requires_grad_(False)

    def blocks(self) -> list[nn.Module]:
        """The transformer layers, lowest first (empty when the layout is unknown)."""
        enc = getattr(self.backbone, "encoder", None)
        return list(getattr(enc, "layer", [])) if enc is not None else []

    def forward(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor, *,
                inputs_embeds: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Token states (B, T, d).

        ``inputs_embeds`` (B, T, d), with ``input_ids=None``, feeds vectors in place of the word
        embeddings (e.g. text embeddings followed by label tokens); ``position_ids`` (B, T)
        replaces the backbone's default positions. Both are passed on only when given.
        """
        needs_all = self.layers != [-1]
        extra = {k: v for k, v in (("inputs_embeds", inputs_embeds), ("position_ids", position_ids))
                 if v is not None}
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                            output_hidden_states=needs_all, return_dict=True, **extra)
        if not needs_all:
            return out.last_hidden_state
        return self._mix([out.hidden_states[i] for i in self.layers])

    def _mix(self, states: list[torch.Tensor]) -> torch.Tensor:
        if self.mix is None:
            return states[0]
        w = torch.softmax(self.mix, 0)
        return sum(wi * s for wi, s in zip(w, states))

    # ---- frozen lower part / trainable upper part, for caching the frozen part's output ------
    def check_split(self) -> None:
        """Raise ConfigError unless :meth:`lower` / :meth:`upper` can stand in for ``forward``."""
        blocks = self.blocks()
        if not self.freeze_layers:
            raise ConfigError("caching the frozen encoder part needs model.freeze_layers > 0")
        if getattr(self.backbone, "embeddings", None) is None or not blocks:
            raise ConfigError("caching the frozen encoder part needs a BERT-like encoder "
                              "(backbone.embeddings and backbone.encoder.layer)")
        low = [i for i in self.layers if (i if i >= 0 else len(blocks) + 1 + i) < self.freeze_layers]
        if low:
            raise ConfigError(f"model.layers {low} lie inside the {self.freeze_layers} frozen layers; "
                              "a cached run can mix only layers above them")

    @torch.no_grad()
    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states after the embeddings and the ``freeze_layers`` frozen layers (B, T, d),
        computed without dropout so they can be cached and reused every epoch."""
        was = self.backbone.training
        self.backbone.eval()
        try:
            h = self.backbone.embeddings(input_ids=input_ids)
            mask = _layer_mask(self.backbone, h, attention_mask)
            for block in self.blocks()[: self.freeze_layers]:
                h = _call_block(block, h, mask)
        finally:
            self.backbone.train(was)
        return h

    def upper(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The trainable layers above ``freeze_layers`` on states from :meth:`lower` (B, T, d),
        mixed as ``forward`` mixes them."""
        blocks = self.blocks()
        n = len(blocks)
        mask = _layer_mask(self.backbone, states, attention_mask)
        hidden = {self.freeze_layers: states}
        for i, block in enumerate(blocks[self.freeze_layers:], self.freeze_layers + 1):
            states = _call_block(block, states, mask)
            hidden[i] = states
        return self._mix([hidden[i if i >= 0 else n + 1 + i] for i in self.layers])

    def param_groups(self, lr: float, layer_decay: float, weight_decay: float) -> list[dict]:
        """AdamW groups with layer-wise decay: layer ``l`` of ``L`` gets ``lr * decay**(L - l)``.

        Embeddings count as layer 0; biases and LayerNorm weights get no weight decay.
        """
        blocks = self.blocks()
        depth = {}
        for i, block in enumerate(blocks, 1):
            for p in block.parameters():
                depth[id(p)] = i
        n = len(blocks)
        groups: dict[tuple[int, bool], list] = {}
        for name, p in self.backbone.named_parameters():
            if not p.requires_grad:
                continue
            d = depth.get(id(p), 0 if "embeddings" in name else n)
            no_wd = p.ndim < 2
            groups.setdefault((d, no_wd), []).append(p)
        out = [{"params": ps, "lr": lr * layer_decay ** (n - d), "weight_decay": 0.0 if no_wd else weight_decay}
               for (d, no_wd), ps in sorted(groups.items())]
        if self.mix is not None:
            out.append({"params": [self.mix], "lr": lr, "weight_decay": 0.0})
        return out


def _layer_mask(backbone: nn.Module, states: torch.Tensor, attention_mask: torch.Tensor):
    """The attention mask in the form the backbone's layers take (as its own forward builds it)."""
    if create_bidirectional_mask is None:      # transformers 4.x: the additive extended mask
        return backbone.get_extended_attention_mask(attention_mask, states.shape[:2], dtype=states.dtype)
    return create_bidirectional_mask(config=backbone.config, inputs_embeds=states, attention_mask=attention_mask)


def _call_block(block: nn.Module, states: torch.Tensor, mask) -> torch.Tensor:
    out = block(states, mask)
    return out[0] if isinstance(out, tuple) else out     # transformers 4.x layers return tuples


def load_backbone(name_or_path: str, **options) -> nn.Module:
    """Load a transformers encoder by built-in name, local folder or hub id (offline-safe)."""
    hf_logging.set_verbosity_error()   # the unused pooler's load report is noise here
    path = resolve_encoder(name_or_path)
    try:  # the pooler is unused; not every architecture takes the flag
        return AutoModel.from_pretrained(path, add_pooling_layer=False, **options)
    except TypeError:
        return AutoModel.from_pretrained(path, **options)
