"""Cheaper dropout for CPU training (``model.fast_dropout``).

On CPU, torch draws a dropout mask one 32-bit Mersenne-Twister number per element: at DuEE's
shapes that costs about as much as the layer's bf16 matrix product (experiments/speed.md). Here each 64-bit draw from the same seeded generator yields
four 16-bit slices, one per element, kept when (read as 0..65535) at or above ``round(p · 65536)``:
the same Bernoulli masks in distribution (drop rate quantised to 1/65,536) at a quarter of the
draws. The backbone's attention runs eagerly so its attention-probability dropout uses these
masks too (``hmtc_eager``, the transformers eager attention with this dropout).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

try:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
except ImportError:               # transformers 4.x: no pluggable attention
    AttentionInterface = None

ATTENTION = "hmtc_eager"


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout of ``x`` with 16-bit random slices (CPU); torch's own elsewhere."""
    if p <= 0:
        return x
    drop = round(p * 65536)
    if drop >= 65536 or x.device.type != "cpu":
        return F.dropout(x, p, True)        # p ≈ 1 zeroes all, as torch does
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(torch.iinfo(torch.int64).min, None)
    slices = words.view(torch.int16)[:n].view(x.shape)
    keep = (slices >= drop - 32768).to(x.dtype)     # int16 spans -32768..32767
    return x * (keep * (65536 / (65536 - drop)))


class FastDropout(nn.Dropout):
    """``nn.Dropout`` drawing its mask with :func:`fast_dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p) if self.training else x


def eager_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, scaling: float | None = None,
                    dropout: float = 0.0, **kwargs):
    """transformers' eager attention (additive mask, softmax) with :func:`fast_dropout`."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = torch.softmax(weights, dim=-1)
    if module.training:
        weights = fast_dropout(weights, dropout)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _register_attention() -> bool:
    if AttentionInterface is None:
        return False
    AttentionInterface.register(ATTENTION, eager_attention)
    AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    return True


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Swap every ``nn.Dropout`` of ``model`` for :class:`FastDropout` and point transformers
    backbones that run eager or SDPA attention with attention dropout at ``hmtc_eager``;
    returns ``model``."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p, child.inplace))
        config = getattr(module, "config", None)
        if (hasattr(module, "set_attn_implementation")
                and getattr(config, "_attn_implementation", None) in ("eager", "sdpa")
                and getattr(config, "attention_probs_dropout_prob", 0.1) > 0    # else SDPA has none to draw
                and _register_attention()):
            module.set_attn_implementation(ATTENTION)
    return model
