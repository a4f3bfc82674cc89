"""Tokenise once, then length-bucketed batches with dynamic padding (seeded, per epoch)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


def tokenize(tokenizer, texts: Sequence[str], max_length: int, chunk: int = 4096) -> list[list[int]]:
    """Token ids of each text, truncated to ``max_length`` (special tokens included)."""
    out: list[list[int]] = []
    for i in range(0, len(texts), chunk):
        enc = tokenizer(list(texts[i:i + chunk]), truncation=True, max_length=max_length,
                        add_special_tokens=True)
        out.extend(enc["input_ids"])
    return out


def length_batches(lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0,
                   epoch: int = 0, bucket_size: int = 50) -> list[np.ndarray]:
    """Index batches of similar length.

    Shuffled: a permutation seeded by ``(seed, epoch)`` is cut into buckets of
    ``batch_size * bucket_size`` samples, each sorted by length and cut into batches, and the
    batch order is shuffled — so an epoch is reproducible on its own (resume needs no RNG
    replay). Not shuffled: sorted by length, longest first (peak memory shows up at once).
    """
    lengths = np.asarray(lengths)
    if not shuffle:
        order = np.argsort(-lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    batches = []
    step = batch_size * bucket_size
    for i in range(0, len(perm), step):
        bucket = perm[i:i + step]
        bucket = bucket[np.argsort(lengths[bucket], kind="stable")]
        batches.extend(bucket[j:j + batch_size] for j in range(0, len(bucket), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence of the batch: (input_ids, attention_mask)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, x in enumerate(ids):
        input_ids[r, : len(x)] = torch.as_tensor(x)
        mask[r, : len(x)] = 1
    return input_ids, mask


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
