"""Batches as torch tensors: padded token ids (:func:`hmtc.batching.pad`) or cached token states,
with their attention masks and labels."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..batching import pad


def collate(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence of the batch: (input_ids, attention_mask), int64."""
    input_ids, mask = pad(ids, pad_id)
    return torch.from_numpy(input_ids), torch.from_numpy(mask)


def iterate(token_ids: Sequence[Sequence[int]], batches: Sequence[np.ndarray], pad_id: int,
            labels: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Yield (indices, input_ids, attention_mask, labels or None) per batch."""
    for b in batches:
        input_ids, mask = collate([token_ids[i] for i in b], pad_id)
        y = None if labels is None else torch.as_tensor(labels[b], dtype=torch.float32)
        yield b, input_ids, mask, y


def iterate_states(states: Sequence[torch.Tensor], batches: Sequence[np.ndarray],
                   labels: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Like :func:`iterate` over cached per-text token states (T_i, d): yield (indices, states
    (B, T, d) zero-padded, attention_mask, labels or None)."""
    for b in batches:
        rows = [states[i] for i in b]
        lengths = torch.as_tensor([len(r) for r in rows])
        x = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).long()
        y = None if labels is None else torch.as_tensor(labels[b], dtype=torch.float32)
        yield b, x, mask, y
