"""Inference plumbing: the device, progress bars, and the frozen layers' states of many texts.

Scoring itself is each model's own :meth:`~hmtc.models.base.Model.scores` (length-sorted
batches, bf16 autocast); a loaded checkpoint scores with its engine
(:meth:`hmtc.checkpoint.Checkpoint.scores`).
"""

from __future__ import annotations

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .batching import iterate, length_batches
from .models import autocast


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def progress_bar(console: Console | None = None, disable: bool = False) -> Progress:
    """The progress display of long work: bar, count, a free ``info`` field, elapsed and left."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, disable=disable, transient=False)


def cache_lower_states(encoder, token_ids: list[list[int]], pad_id: int, batch_size: int, bf16: bool,
                       device: torch.device, progress: Progress | None = None) -> list[torch.Tensor]:
    """Each text's token states (T_i, d) under the encoder's frozen part (:meth:`TextEncoder.lower`),
    in input order, kept in bf16 when ``bf16`` (the cache of ``train.cache_frozen``)."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    cache: list[torch.Tensor] = [None] * len(token_ids)   # type: ignore[list-item]
    task = progress.add_task("cache frozen layers", total=len(token_ids), info="") if progress else None
    batches = length_batches([len(x) for x in token_ids], batch_size, shuffle=False)
    for b, input_ids, mask, _ in iterate(token_ids, batches, pad_id):
        with autocast(device, bf16):
            h = encoder.lower(input_ids.to(device), mask.to(device)).to(dtype)
        for r, i in enumerate(b):
            cache[i] = h[r, : len(token_ids[i])].clone()
        if progress:
            progress.advance(task, len(b))
    if progress and task is not None:
        progress.remove_task(task)
    return cache
