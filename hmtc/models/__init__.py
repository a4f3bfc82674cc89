"""Models by name. Each takes (encoder, compiled taxonomy, its config) and returns ModelOutput."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

MODELS: Registry = Registry("model")


class EncoderModel(nn.Module):
    """Base of the neural models: ``self.encoder`` (TextEncoder) feeds ``forward_states``."""

    def head_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters outside the encoder (they get the head learning rate)."""
        enc = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in enc and p.requires_grad]

    supports_cache = True      # False where the input itself changes (label tokens)

    def forward(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None, *,
                lower_states: torch.Tensor | None = None) -> "ModelOutput":
        """``lower_states`` (cached :meth:`TextEncoder.lower` output) replaces ``input_ids``."""
        return self.forward_states(self.encode(input_ids, attention_mask, lower_states), attention_mask, labels)

    def encode(self, input_ids, attention_mask, lower_states=None) -> torch.Tensor:
        if lower_states is not None:
            return self.encoder.upper(lower_states, attention_mask)
        return self.encoder(input_ids, attention_mask)


@dataclass
class ModelOutput:
    """``logits`` (B, N) in the compiled taxonomy's column order; ``loss`` only when labels are passed."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


def make_config(model_name: str, options: dict):
    """Build the named model's config dataclass from a dict, rejecting unknown keys."""
    cls = MODELS.get(model_name).config_class
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) for model {model_name!r}: {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    return cls(**options)


from . import flat, global_, local, msml, tfidf  # noqa: E402,F401  (registers the built-in models)
