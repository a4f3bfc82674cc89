"""Tokenise once, then length-bucketed batches with dynamic padding (seeded, per epoch), in numpy:
torch's batches are :mod:`hmtc.models.batches`, ONNX Runtime's (:mod:`hmtc.runtime`) these arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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


def pad(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad to the longest sequence of the batch: (input_ids, attention_mask), int64 (B, longest)."""
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for r, x in enumerate(ids):
        input_ids[r, : len(x)] = x
        mask[r, : len(x)] = 1
    return input_ids, mask
