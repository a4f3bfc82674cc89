"""Pooling heads by name: token states (B, T, d) + mask -> one vector (B, d_out) per text."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry

HEADS: Registry = Registry("head")


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(states.dtype)[..., None]
    return (states * m).sum(1) / m.sum(1).clamp_min(1.0)


@HEADS.register("cls")
class CLSHead(nn.Module):
    """The first token's state (with windows: the first window's [CLS])."""

    def __init__(self, hidden: int, **_):
        super().__init__()
        self.out_dim = hidden

    def forward(self, states, mask):
        return states[:, 0]


@HEADS.register("mean")
class MeanHead(nn.Module):
    """Mean of the unpadded token states."""

    def __init__(self, hidden: int, **_):
        super().__init__()
        self.out_dim = hidden

    def forward(self, states, mask):
        return masked_mean(states, mask)


@HEADS.register("attention")
class AttentionHead(nn.Module):
    """Learned attention pooling: softmax over tokens of ``v · tanh(W h_t)``."""

    def __init__(self, hidden: int, **_):
        super().__init__()
        self.proj = nn.Linear(hidden, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)
        self.out_dim = hidden

    def forward(self, states, mask):
        a = self.score(torch.tanh(self.proj(states))).squeeze(-1)
        a = a.masked_fill(~mask.bool(), float("-inf")).softmax(-1)
        return (a[..., None] * states).sum(1)


@HEADS.register("bilstm")
class BiLSTMHead(nn.Module):
    """A BiLSTM over the token states, mean-pooled."""

    def __init__(self, hidden: int, lstm_dim: int = 192, **_):
        super().__init__()
        self.lstm = nn.LSTM(hidden, lstm_dim, batch_first=True, bidirectional=True)
        self.out_dim = 2 * lstm_dim

    def forward(self, states, mask):
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(states.float(), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=states.shape[1])
        return masked_mean(out, mask)


@HEADS.register("textcnn")
class TextCNNHead(nn.Module):
    """Convolutions of several widths, masked max-pooled over time."""

    def __init__(self, hidden: int, kernels: tuple[int, ...] = (2, 3, 4), filters: int = 128, **_):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(hidden, filters, k, padding=k // 2) for k in kernels)
        self.out_dim = filters * len(kernels)

    def forward(self, states, mask):
        pad = ~mask.bool()[:, None, :]
        x, t = states.transpose(1, 2).masked_fill(pad, 0.0), states.shape[1]   # padding-independent
        return torch.cat([F.gelu(c(x)[..., :t]).masked_fill(pad, float("-inf")).amax(-1) for c in self.convs], -1)
