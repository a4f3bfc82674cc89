"""Inference plumbing: the device, progress bars, and the frozen layers' states of many texts.

Scoring itself is each model's own :meth:`~hmtc.models.base.Model.scores` (length-sorted
batches, bf16 autocast); a loaded checkpoint scores with its engine
(:meth:`hmtc.checkpoint.Checkpoint.scores`).
"""

from __future__ import annotations

import hashlib

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .batching import iterate, length_batches
from .models import autocast
from .models.encoder import Windows


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
                       device: torch.device, progress: Progress | None = None,
                       windows: Windows | None = None) -> list[torch.Tensor]:
    """Each text's token states (T_i, d) under the encoder's frozen part (:meth:`TextEncoder.lower`),
    in input order, kept in bf16 when ``bf16`` (the cache of ``train.cache_frozen``). With
    ``windows``, a text longer than one window keeps its windows' states in the windowed layout
    (T_w, d) (:class:`~hmtc.models.encoder.Windows`), which the model cuts again when it trains."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    cache: list[torch.Tensor] = [None] * len(token_ids)   # type: ignore[list-item]
    task = progress.add_task("cache frozen layers", total=len(token_ids), info="") if progress else None
    batches = length_batches([len(x) for x in token_ids], batch_size, shuffle=False)
    for b, input_ids, mask, _ in iterate(token_ids, batches, pad_id):
        input_ids, mask = input_ids.to(device), mask.to(device)
        with autocast(device, bf16):
            if windows is None or input_ids.shape[1] <= windows.length:
                h = encoder.lower(input_ids, mask).to(dtype)
                rows = [h[r, : len(token_ids[i])] for r, i in enumerate(b)]
            else:
                cut = windows.cut(input_ids, mask)
                rows = windows.end_to_end(encoder.lower(cut.inputs, cut.mask).to(dtype), cut)
        for r, i in enumerate(b):
            cache[i] = rows[r].clone()
        if progress:
            progress.advance(task, len(b))
    if progress and task is not None:
        progress.remove_task(task)
    return cache


def frozen_fingerprint(encoder, bf16: bool, windows: Windows | None = None) -> str:
    """A digest of what a text's cached states depend on besides its token ids: the frozen part's
    weights (embeddings and the lowest ``freeze_layers`` layers, bytes and shapes), the window
    length and stride, and the cache's dtype. On the CPU a text's states under equal fingerprints
    were bitwise equal whatever batch it ran in (padding is masked; checked on DuEE and on 20NG's
    windows, and by a test), so runs of equal fingerprint, such as the seeds of one set, can share
    each text's cached states (:class:`hmtc.train.Trainer`). On a GPU, kernels chosen by batch
    shape may differ in the last bits."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"bf16={bool(bf16)};windows={(windows.length, windows.stride) if windows else None};".encode())
    for part in [encoder.backbone.embeddings, *encoder.blocks()[: encoder.freeze_layers]]:
        for name, t in [*part.named_parameters(), *part.named_buffers()]:
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
