"""Inference plumbing: the device, progress bars, and the frozen layers' states of many texts.

Scoring itself is each model's own :meth:`~hmtc.models.base.Model.scores` (length-sorted
batches, bf16 autocast); a loaded checkpoint scores with its engine
(:meth:`hmtc.checkpoint.Checkpoint.scores`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from rich.progress import Progress

from .batching import length_batches, tokenize
from .errors import HmtcError
from .frozen_store import FrozenStore, store_root, text_key
from .models import autocast
from .models.base import EncoderModel
from .models.batches import iterate
from .models.encoder import Windows
from .models.ensemble import EnsembleModel


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; a CUDA device this machine lacks is an error
    naming what there is."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise HmtcError(f"train.device = {name!r}, but this machine has no CUDA device (torch "
                            f"{torch.__version__}); use \"auto\" or \"cpu\"")
        if device.index is not None and device.index >= count:
            raise HmtcError(f"train.device = {name!r}, but this machine has {count} CUDA device(s)")
    return device


def cache_lower_states(encoder, token_ids: list[list[int]], pad_id: int, batch_size: int, bf16: bool,
                       device: torch.device, progress: Progress | None = None,
                       windows: Windows | None = None, store: FrozenStore | None = None,
                       keep: torch.dtype | None = None, shard_rows: int = 1 << 18) -> list[torch.Tensor]:
    """Each text's token states (T_i, d) under the encoder's frozen part (:meth:`TextEncoder.lower`),
    in input order, computed as the uncached forward computes them (bf16 autocast when ``bf16``;
    windows grouped by :meth:`Windows.encode`) and cast to ``keep`` (None: as computed; the
    in-memory cache of ``train.cache_frozen`` keeps bf16 when training in bf16). With ``windows``,
    a text longer than one window keeps its windows' states in the windowed layout (T_w, d)
    (:class:`~hmtc.models.encoder.Windows`), which the model cuts again.

    With a ``store`` (:class:`~hmtc.frozen_store.FrozenStore`), texts it holds are read from it and
    the others computed and added to it, a shard every ``shard_rows`` rows, so a stopped run keeps
    what it computed."""
    cache: list[torch.Tensor] = [None] * len(token_ids)   # type: ignore[list-item]
    keys = [text_key(x) for x in token_ids] if store is not None else []
    if store is not None:       # on the device the computed states stay on, so batches never mix
        for i, h in enumerate(store.get(keys, keep, device)):
            if h is not None:
                cache[i] = h
    todo = [i for i, h in enumerate(cache) if h is None]
    task = progress.add_task("cache frozen layers", total=len(todo), info="") if progress and todo else None
    pending: tuple[list[bytes], list[torch.Tensor]] = ([], [])
    batches = length_batches([len(token_ids[i]) for i in todo], batch_size, shuffle=False)
    for b, input_ids, mask, _ in iterate([token_ids[i] for i in todo], batches, pad_id):
        input_ids, mask = input_ids.to(device), mask.to(device)
        with autocast(device, bf16):
            if windows is None or input_ids.shape[1] <= windows.length:
                h = encoder.lower(input_ids, mask)
                rows = [h[r, : len(token_ids[todo[i]])] for r, i in enumerate(b)]
            else:
                cut = windows.cut(input_ids, mask)
                rows = windows.end_to_end(windows.encode(cut, encoder.lower), cut)
        for r, i in enumerate(b):
            h = rows[r].clone()
            if store is not None:
                pending[0].append(keys[todo[i]])
                pending[1].append(h)
            cache[todo[i]] = h if keep is None else h.to(keep)
        if store is not None and sum(len(x) for x in pending[1]) >= shard_rows:
            store.put(*pending)
            pending = ([], [])
        if progress and task is not None:
            progress.advance(task, len(b))
    if store is not None:
        store.put(*pending)
    if progress and task is not None:
        progress.remove_task(task)
    return cache


def frozen_fingerprint(encoder, bf16: bool, windows: Windows | None = None) -> str:
    """A digest of what a text's cached states depend on besides its token ids: the frozen part's
    weights (embeddings and the lowest ``freeze_layers`` layers, bytes and shapes), the window
    length and stride, and the cache's dtype. On the CPU a text's bf16-cached states under equal
    fingerprints were bitwise equal whatever batch it ran in (padding is masked; checked on DuEE and
    on 20NG's windows, and by a test), so runs of equal fingerprint, such as the seeds of one set,
    share each text's cached states (:class:`hmtc.train.Trainer`), and name the disk store of
    ``train.frozen_store``. In fp32 the last bits can follow the batch's padding width (the
    summation order changes); on a GPU, kernels chosen by batch shape may differ too."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"bf16={bool(bf16)};windows={(windows.length, windows.stride) if windows else None};".encode())
    for part in [encoder.backbone.embeddings, *encoder.blocks()[: encoder.freeze_layers]]:
        for name, t in [*part.named_parameters(), *part.named_buffers()]:
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def to_device(model, device: torch.device) -> None:
    """Move a model's weights to ``device``: a torch model itself, an ensemble each member."""
    if isinstance(model, EnsembleModel):
        for m in model.members:
            to_device(m, device)
    elif isinstance(model, torch.nn.Module):
        model.to(device)


def reads_store(model) -> bool:
    """Whether :func:`score_texts` reads some of ``model``'s frozen states from a store."""
    if isinstance(model, EnsembleModel):
        return any(reads_store(m) for m in model.members)
    return isinstance(model, EncoderModel) and model.frozen_store


def score_texts(model, texts: list[str], progress: Progress | None = None) -> tuple[np.ndarray, int]:
    """Scores (S, N) of ``texts`` as ``model.scores`` gives them, with the frozen part's states
    read from the store (:func:`score_with_store`) for an encoder model whose run keeps them
    (``train.frozen_store``), member by member in an ensemble; and how many texts' states were read
    (in an ensemble, by the member that read the most)."""
    if isinstance(model, EnsembleModel):
        parts = [score_texts(m, texts, progress) for m in model.members]
        return model.combine([p[0] for p in parts]), max(p[1] for p in parts)
    if isinstance(model, EncoderModel) and model.frozen_store:
        return score_with_store(model, texts, progress)
    return model.scores(texts, progress=progress), 0


def score_with_store(model, texts: list[str], progress: Progress | None = None,
                     chunk: int = 2048) -> tuple[np.ndarray, int]:
    """Logits (S, N) of an encoder model over ``texts``, as :meth:`~hmtc.models.base.EncoderModel.scores`
    gives them, with the frozen part's states read from its store (:class:`~hmtc.frozen_store.FrozenStore`)
    where it holds them and computed and added otherwise; and how many texts were read.

    Texts are taken longest first in chunks of whole batches, so every batch of the layers above
    holds the texts :meth:`score_ids` puts together, and so does every batch of the frozen part
    when the store holds none of a chunk's texts: such texts score bitwise as the uncached model
    scores them (CPU). States stored from other batches (another split, another run, part of a
    chunk) may differ in their last bits (the padding width changes the summation order)."""
    ids = tokenize(model.tokenizer, [model.text_prefix + t for t in texts], model.max_length)
    pad_id = getattr(model.tokenizer, "pad_token_id", None) or 0
    device = next(model.parameters()).device
    store = FrozenStore(store_root() / frozen_fingerprint(model.encoder, model.bf16, model.windows))
    stored = store.holds([text_key(x) for x in ids])
    order = np.argsort(-np.asarray([len(x) for x in ids]), kind="stable")
    step = max(1, chunk // model.eval_batch_size) * model.eval_batch_size
    out = None
    task = progress.add_task("predict", total=len(ids), info="") if progress else None
    for j in range(0, len(ids), step):
        part = order[j: j + step]
        states = cache_lower_states(model.encoder, [ids[i] for i in part], pad_id, model.eval_batch_size,
                                    model.bf16, device, None, model.windows, store)
        logits = model.score_states(states)
        if out is None:
            out = np.zeros((len(ids), logits.shape[1]), dtype=np.float32)
        out[part] = logits
        if progress and task is not None:
            progress.advance(task, len(part))
    if progress and task is not None:
        progress.remove_task(task)
    return (out if out is not None else np.zeros((0, 0), dtype=np.float32)), stored
