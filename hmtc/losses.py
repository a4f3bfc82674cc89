"""Multi-label losses over logits (B, N) and 0/1 targets (B, N), chosen by name.

ZLPR ("multilabel categorical cross-entropy", Su 2020) for one sample with scores s:

    L = log(1 + Σ_{i ∈ neg} exp(s_i)) + log(1 + Σ_{j ∈ pos} exp(-s_j))

which ranks every positive above 0 and every negative below 0, so the decision is s > 0.

Sigmoid focal loss (Lin et al. 2017), per entry with p = σ(z), p_t = p if y else 1 − p,
α_t = α if y else 1 − α:

    FL = −α_t (1 − p_t)^γ log p_t                 (α < 0: no α_t weighting)

Logit-adjusted BCE (Menon et al. 2021, one binary problem per label), with π_i label i's
prior in the training set (Laplace-smoothed: (n_i + 1) / (S + 2) over S samples):

    L = BCE(z_i + τ log(π_i / (1 − π_i)), y_i)

Only the loss sees the offset; the model's logits stay unadjusted, so at inference a rare label
(negative log-odds) needs a larger logit during training and is favoured afterwards.

Exclusive sibling groups (``!exclusive`` in the taxonomy; :class:`ExclusiveLoss`): for a group g
with children C_g and a sample with positive children P_g = {c ∈ C_g : y_c = 1},

    L_g = logsumexp_{c ∈ C_g} z_c − (1/|P_g|) Σ_{c ∈ P_g} z_c       (L_g = 0 when P_g = ∅)
    L_excl = (1/B) Σ_samples Σ_g L_g

the softmax cross-entropy of the group's children against the one positive child (or, where the
data breaks the mark, the uniform target over the positive ones). A sample with no positive child
in a group (its parent is negative, or its labels stop at the parent) adds nothing for that group.
Models add L_excl to their usual loss, which still scores every column: the softmax is invariant
to a shift of a group's logits, so alone it would leave their level free, and every decoder
thresholds each column on its own (the per-node loss keeps ``z > 0`` meaning "present").

Using a loss. A function entry is called as ``LOSSES.get(name)(logits, targets, mask=None,
**options)``; a class entry (``logit_adjusted``, which learns label priors) is a :class:`Loss`.
A model builds its configured loss once, as a submodule::

    self.loss_fn = build_loss(config.loss, config.loss_options, columns=...)
    loss = self.loss_fn(logits, targets, mask)

``columns`` names the label-matrix columns the loss scores (e.g. the leaves, or one level), so
the trainer's :func:`fit_losses` can hand each loss the training labels it needs before the
first step (or pass ``y_train`` to :func:`build_loss` to fit at once).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, HmtcError
from .registry import Registry
from .taxonomy import TaxonomyIndex

LOSSES: Registry = Registry("loss")


@LOSSES.register("bce")
def bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean sigmoid binary cross-entropy; ``mask`` (B, N) drops entries from the mean."""
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return _masked_mean(loss, mask)


@LOSSES.register("zlpr")
def zlpr(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """ZLPR loss, mean over samples; masked entries take no part."""
    y = targets.to(torch.bool)
    s = logits.float()
    if mask is not None:
        s = s.masked_fill(~mask.bool(), float("-inf"))  # exp(-inf) = 0 in both sums
        pos_s = torch.where(y & mask.bool(), -s, torch.full_like(s, float("-inf")))
    else:
        pos_s = torch.where(y, -s, torch.full_like(s, float("-inf")))
    neg_s = torch.where(y, torch.full_like(s, float("-inf")), s)
    zeros = torch.zeros_like(s[:, :1])
    return (torch.logsumexp(torch.cat([zeros, neg_s], 1), 1)
            + torch.logsumexp(torch.cat([zeros, pos_s], 1), 1)).mean()


@LOSSES.register("focal")
def focal(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
          gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Mean sigmoid focal loss (module docstring); ``mask`` drops entries from the mean."""
    z, y = logits.float(), targets.float()
    ce = F.binary_cross_entropy_with_logits(z, y, reduction="none")       # −log p_t
    p_t = torch.exp(-ce)
    loss = (1 - p_t).pow(gamma) * ce
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return _masked_mean(loss, mask)


def _masked_mean(loss: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return loss.mean()
    m = mask.to(loss.dtype)
    return (loss * m).sum() / m.sum().clamp_min(1.0)


class Loss(nn.Module):
    """A configured loss, ``loss(logits, targets, mask=None)``, held by a model as a submodule.

    Parameters
    ----------
    columns : slice or array of int, optional
        The columns of the (S, N) label matrix this loss scores (all when None); :meth:`fit`
        reads only those.
    """

    def __init__(self, columns=None):
        super().__init__()
        self.columns = slice(None) if columns is None else columns

    def fit(self, y_train: np.ndarray) -> None:
        """Learn what the loss needs from the training label matrix (S, N); nothing by default."""


class FunctionLoss(Loss):
    """A function entry of ``LOSSES`` with its keyword options bound."""

    def __init__(self, fn, columns=None, **options):
        super().__init__(columns)
        self.fn, self.options = fn, options

    def forward(self, logits, targets, mask=None):
        return self.fn(logits, targets, mask, **self.options)


@LOSSES.register("logit_adjusted")
class LogitAdjustedLoss(Loss):
    """Logit-adjusted BCE (module docstring); needs :meth:`fit` before use.

    Parameters
    ----------
    columns : slice or array of int, optional
        See :class:`Loss`.
    tau : float
        Strength τ of the adjustment (0: plain BCE).
    """

    def __init__(self, columns=None, tau: float = 1.0):
        super().__init__(columns)
        self.tau = tau
        self.register_buffer("offset", torch.zeros(0), persistent=False)  # τ·log-odds of the priors

    def fit(self, y_train: np.ndarray) -> None:
        y = np.asarray(y_train)[:, self.columns]
        prior = (y.sum(0) + 1.0) / (len(y) + 2.0)
        self.offset = torch.as_tensor(self.tau * np.log(prior / (1 - prior)), dtype=torch.float32,
                                      device=self.offset.device)

    def forward(self, logits, targets, mask=None):
        if self.offset.numel() != logits.shape[-1]:
            raise HmtcError("logit_adjusted loss has no label priors for these logits; "
                            "fit it on the training labels first (hmtc.losses.fit_losses)")
        return bce(logits.float() + self.offset, targets, mask)


def build_loss(name: str, options: dict | None = None, y_train: np.ndarray | None = None,
               columns=None) -> Loss:
    """The named loss with its options, as a module ``loss(logits, targets, mask=None)``.

    Parameters
    ----------
    name : str
        A ``LOSSES`` entry.
    options : dict, optional
        Its keyword options (e.g. ``{"gamma": 1.0}`` for focal, ``{"tau": 0.5}`` for
        logit_adjusted); unknown names are a :class:`ConfigError`.
    y_train : ndarray, optional
        The training label matrix (S, N): fit the loss now (else :func:`fit_losses` later).
    columns : slice or array of int, optional
        The label-matrix columns the loss scores (e.g. a model's leaves or one level).
    """
    entry, options = LOSSES.get(name), dict(options or {})
    is_class = isinstance(entry, type)
    params = inspect.signature(entry).parameters
    known = sorted(set(params) - ({"columns"} if is_class else {"logits", "targets", "mask"}))
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"unknown option(s) for loss {name!r}: {', '.join(unknown)}; "
                          f"known: {', '.join(known) or 'none'}")
    loss = entry(columns, **options) if is_class else FunctionLoss(entry, columns, **options)
    if y_train is not None:
        loss.fit(y_train)
    return loss


def fit_losses(model: nn.Module, y_train: np.ndarray) -> None:
    """Fit every :class:`Loss` inside ``model`` on the training label matrix (S, N)."""
    for m in model.modules():
        if isinstance(m, Loss):
            m.fit(y_train)


class ExclusiveLoss(nn.Module):
    """L_excl over exclusive sibling groups (module docstring), ``loss(logits, targets)``.

    Parameters
    ----------
    groups : ndarray of int, shape (G, K)
        Logit columns of each group's children, padded with -1.
    label_groups : ndarray of int, shape (G, K), optional
        Label-matrix columns of the same children, when the logits are not in the label
        matrix's column order (the local model's edge logits); default ``groups``.
    """

    def __init__(self, groups: np.ndarray, label_groups: np.ndarray | None = None):
        super().__init__()
        groups = np.asarray(groups)
        labels = groups if label_groups is None else np.asarray(label_groups)
        valid = groups >= 0
        for name, arr in (("cols", np.where(valid, groups, 0)), ("label_cols", np.where(valid, labels, 0)),
                          ("valid", valid)):
            self.register_buffer(name, torch.as_tensor(arr), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = logits.float()[:, self.cols].masked_fill(~self.valid, float("-inf"))     # (B, G, K)
        pos = targets.bool()[:, self.label_cols] & self.valid
        n_pos = pos.sum(-1)                                                           # (B, G)
        pos_mean = torch.where(pos, z, torch.zeros_like(z)).sum(-1) / n_pos.clamp_min(1)
        ce = torch.where(n_pos > 0, torch.logsumexp(z, -1) - pos_mean, torch.zeros_like(pos_mean))
        return ce.sum(-1).mean()


def exclusive_loss(index: TaxonomyIndex, groups: np.ndarray | None = None) -> ExclusiveLoss | None:
    """The :class:`ExclusiveLoss` of a compiled taxonomy's groups, None when it has none (a
    taxonomy without ``!exclusive`` marks trains exactly as before).

    Parameters
    ----------
    index : TaxonomyIndex
    groups : ndarray of int, shape (G, K), optional
        Logit columns of ``index.exclusive_children`` (same padding) for logits that are not
        node logits in the index's order.
    """
    if not index.n_groups:
        return None
    if groups is None:
        return ExclusiveLoss(index.exclusive_children)
    return ExclusiveLoss(groups, index.exclusive_children)


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Soft-target BCE between the student's and a teacher's per-node probabilities.

    Both logits are divided by ``temperature`` T; the loss is summed over nodes, averaged over
    samples (the scale of the ZLPR loss) and multiplied by T² so that its gradients keep their size
    as T changes (Hinton et al., 2015).
    """
    t = float(temperature)
    soft = torch.sigmoid(teacher_logits.float() / t)
    loss = F.binary_cross_entropy_with_logits(logits.float() / t, soft, reduction="none")
    return loss.sum(-1).mean() * t * t
