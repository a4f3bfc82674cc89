"""Regularisers of one training step (all off by default, any combination works).

Notation: ``e`` (B, T, d) is the output of the backbone's word-embedding module for a batch of B
texts, ``L`` the batch loss (a mean over samples, so ``∇_{e_b} ℓ_b = B ∇_{e_b} L`` for the loss
``ℓ_b`` of text ``b``), ``θ`` every trainable weight.

FGM (Miyato et al. 2017), after the ordinary backward, one adversarial step per text::

    g = ∇_e L,    r_b = ε g_b / ||g_b||
    ∇θ ← ∇θ L(e) + ∇θ L(e + r)           a second forward/backward; the hook then removes r

Gradient penalty on the embedding gradient, by finite differences (no double backward, so
fused attention kernels and cuDNN LSTMs, which lack second derivatives, still work)::

    L_gp = L + λ · mean_b ||∇_{e_b} ℓ_b||² = L + λB ||∇_e L||²
    ∇θ L_gp ≈ ∇θ L(e + δ),  δ = 2λB ∇_e L  (first-order Taylor in e, with ∇_e L held fixed)

It costs one gradient with respect to ``e`` (no weight gradients) and one ordinary
forward/backward at ``e + δ``, which replaces the ordinary one.

R-Drop (Liang et al. 2021): the batch twice in one forward pass (independent dropout masks),
logits ``z¹, z²`` and per-label Bernoullis ``p = σ(z)``::

    L_rd = ½(L¹ + L²) + α · mean_b Σ_i ½[KL(p¹_i ‖ p²_i) + KL(p²_i ‖ p¹_i)]
    ½[KL(p¹ ‖ p²) + KL(p² ‖ p¹)] = ½ (p¹ − p²)(z¹ − z²)

Both embedding regularisers hook the word-embedding module's output (a forward hook), so they
work with frozen word embeddings and with models that feed ``inputs_embeds`` (label tokens).
With cached frozen layers (``train.cache_frozen``) the word embeddings never run again, so both
act on the first trainable layer's input instead: ``e`` is then the cached states of the batch
(the frozen layers' output), perturbed as ``e + r`` in a copy, never in the cache itself. With
windows (``model.windows``) on uncached texts, ``b`` runs over windows, not texts: ``e`` is the
windows' embeddings, in as many parts as the encoder ran (full and short windows apart).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .errors import ConfigError


def symmetric_kl(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Mean over samples of Σ_i ½[KL(p¹‖p²) + KL(p²‖p¹)], p = σ(z), for logits (B, N)."""
    ok = torch.isfinite(z1) & torch.isfinite(z2)        # ±inf logits (masked nodes) have nothing to match
    z1, z2 = z1.float().masked_fill(~ok, 0.0), z2.float().masked_fill(~ok, 0.0)
    return (0.5 * (torch.sigmoid(z1) - torch.sigmoid(z2)) * (z1 - z2)).sum(-1).mean()


def rdrop_loss(model: nn.Module, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
               labels: torch.Tensor, alpha: float, lower_states: torch.Tensor | None = None) -> torch.Tensor:
    """R-Drop loss ``½(L¹ + L²) + α · symmetric_kl(z¹, z²)`` from one forward of the doubled batch."""
    twice = (lambda x: None if x is None else torch.cat([x, x]))
    extra = {} if lower_states is None else {"lower_states": twice(lower_states)}
    out = model(twice(input_ids), twice(attention_mask), labels=twice(labels), **extra)
    z1, z2 = out.logits.chunk(2)
    return out.loss + alpha * symmetric_kl(z1, z2)      # the loss of 2B equal halves is their mean


def word_embeddings(model: nn.Module) -> nn.Module:
    """The word-embedding module of a model's transformer encoder."""
    try:
        return model.encoder.backbone.get_input_embeddings()
    except AttributeError:
        raise ConfigError("fgm_epsilon and gp_weight need a model with a transformer encoder") from None


class EmbeddingTap:
    """Forward hook on a word-embedding module.

    The module may run more than once in one forward pass (windows: full and short windows are
    encoded apart), so the tap keeps a list. While ``deltas`` is None it appends each output to
    ``outputs``, requiring grad (a leaf when the embeddings are frozen) so that ``∇_e L`` exists;
    otherwise the k-th call of a pass (``start`` resets the count) returns ``output + deltas[k]``.
    """

    def __init__(self, module: nn.Module):
        self.outputs: list[torch.Tensor] = []
        self.deltas: list[torch.Tensor] | None = None
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def start(self, deltas: list[torch.Tensor] | None) -> None:
        self.deltas, self.calls = deltas, 0
        if deltas is None:
            self.outputs = []

    def _hook(self, module, inputs, out):
        if self.deltas is not None:
            self.calls += 1
            return out + self.deltas[self.calls - 1]
        if out.requires_grad:
            out.retain_grad()
        else:
            out = out.detach().requires_grad_()
        self.outputs.append(out)
        return out

    def remove(self) -> None:
        self.handle.remove()


class StatesTap:
    """The cached-states counterpart of :class:`EmbeddingTap`: ``value()`` is the batch's states as a
    leaf that requires grad (``outputs[0]``) while ``deltas`` is None, else ``states + deltas[0]``."""

    def __init__(self, states: torch.Tensor):
        self.states = states
        self.outputs: list[torch.Tensor] = []
        self.deltas: list[torch.Tensor] | None = None

    def start(self, deltas: list[torch.Tensor] | None) -> None:
        self.deltas = deltas

    def value(self) -> torch.Tensor:
        if self.deltas is not None:
            return self.states + self.deltas[0].to(self.states.dtype)
        self.outputs = [self.states.detach().requires_grad_()]
        return self.outputs[0]

    def remove(self) -> None:
        pass


def backward_step(forward: Callable[..., torch.Tensor], embeddings: nn.Module | None = None,
                  fgm_epsilon: float = 0.0, gp_weight: float = 0.0,
                  states: torch.Tensor | None = None) -> torch.Tensor:
    """Accumulate the gradients of one batch, with FGM and the gradient penalty when set.

    Parameters
    ----------
    forward : callable
        Runs the model on the batch (under autocast, if wanted) and returns the loss; called
        once, twice (FGM or GP) or three times (both), each call with fresh dropout. With
        ``states`` it takes the (possibly perturbed) states as its one argument.
    embeddings : nn.Module, optional
        The word-embedding module (:func:`word_embeddings`); needed for FGM and GP on texts.
    states : torch.Tensor, optional
        Cached lower-layer states of the batch (B, T, d): FGM and GP perturb these instead.
    fgm_epsilon, gp_weight : float
        ``ε`` and ``λ`` of the module docstring; 0 turns each off.

    Returns
    -------
    torch.Tensor
        The loss of the unperturbed pass, detached.
    """
    if not (fgm_epsilon or gp_weight):
        loss = forward() if states is None else forward(states)
        loss.backward()
        return loss.detach()
    if states is not None:
        tap: EmbeddingTap | StatesTap = StatesTap(states)
        run = forward
        forward = lambda: run(tap.value())       # noqa: E731
    else:
        tap = EmbeddingTap(embeddings)
    try:
        tap.start(None)
        loss = forward()
        es = tap.outputs
        if gp_weight:
            gs = torch.autograd.grad(loss, es)
            rows = sum(len(e) for e in es)
            tap.start([2 * gp_weight * rows * g for g in gs])
            forward().backward()
        else:
            loss.backward()
            gs = [e.grad for e in es]
        if fgm_epsilon:
            tap.start([fgm_epsilon * g / torch.linalg.vector_norm(g, dim=tuple(range(1, g.ndim)), keepdim=True)
                       .clamp_min(1e-12) for g in gs])
            forward().backward()
    finally:
        tap.remove()
    return loss.detach()
