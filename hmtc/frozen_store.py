"""The frozen layers' states of texts on disk, shared by every run and evaluation that freezes the
same part of the same encoder.

A frozen part (the embeddings and the lowest ``model.freeze_layers`` layers) maps a text's token ids
to the same states whatever run asks, so a flat, a global and an MSML run over one corpus, and the
evaluation of each, need them computed once (``train.frozen_store``). A store is the folder
``$HMTC_HOME/frozen/<fingerprint>/`` (:func:`hmtc.inference.frozen_fingerprint`), holding shards
written once each, aside and then renamed, so a run stopped midway keeps what it had stored::

    NNNNNN.safetensors   keys     (n, 16) uint8    blake2b digest of text i's token ids (int64 bytes)
                         offsets  (n + 1,) int64   text i's rows are states[offsets[i] : offsets[i + 1]]
                         states   (Σ T_i, d)       as the frozen part computes them

Rows are kept in the frozen part's own output dtype (fp32 under bf16 autocast on a CPU): a run
training in bf16 rounds them as its in-memory cache always did, and an evaluation reads what the
uncached model computes. Reading maps each shard and copies only the rows asked for. A text stored
twice (two runs at once) is read from either copy; the copies are equal up to the rounding of the
batches they were computed in.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .home import home


def store_root() -> Path:
    """``$HMTC_HOME/frozen`` (``HMTC_HOME`` defaults to ``~/.cache/hmtc``, as for encoders)."""
    return home() / "frozen"


def text_key(token_ids) -> bytes:
    """The 16-byte digest that names a text's states: its token ids as int64."""
    return hashlib.blake2b(np.asarray(token_ids, dtype=np.int64).tobytes(), digest_size=16).digest()


class FrozenStore:
    """The shards of one frozen part (see the module docstring).

    Parameters
    ----------
    folder : str or Path
        ``<store_root()>/<fingerprint>``; created on the first :meth:`put`.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._where: dict[bytes, tuple[Path, int, int]] = {}
        self._seen: set[Path] = set()

    def _scan(self) -> None:
        """Index the shards not seen yet (another process may have added some); a shard that
        cannot be read is skipped with a warning, its texts computed again."""
        for shard in sorted(self.folder.glob("*.safetensors")) if self.folder.is_dir() else []:
            if shard in self._seen:
                continue
            self._seen.add(shard)
            try:
                with safe_open(str(shard), framework="pt") as f:
                    keys, offsets = f.get_tensor("keys").numpy(), f.get_tensor("offsets").tolist()
            except Exception as e:      # a damaged shard costs its texts' recomputation, not the run
                warnings.warn(f"{shard}: unreadable frozen-layer shard skipped ({e})", stacklevel=2)
                continue
            for i, k in enumerate(keys):
                self._where.setdefault(k.tobytes(), (shard, offsets[i], offsets[i + 1]))

    def holds(self, keys: list[bytes]) -> int:
        """How many of ``keys`` the store has states for."""
        self._scan()
        return sum(k in self._where for k in keys)

    def __len__(self) -> int:
        self._scan()
        return len(self._where)

    def get(self, keys: list[bytes], dtype: torch.dtype | None = None,
            device: torch.device | str = "cpu") -> list[torch.Tensor | None]:
        """The stored states (T_i, d) of each key, cast to ``dtype`` (None: as stored) on ``device``
        one text at a time, or None where the store has none."""
        self._scan()
        out: list[torch.Tensor | None] = [None] * len(keys)
        by_shard: dict[Path, list[int]] = {}
        for i, k in enumerate(keys):
            if k in self._where:
                by_shard.setdefault(self._where[k][0], []).append(i)
        for shard, rows in by_shard.items():
            with safe_open(str(shard), framework="pt") as f:
                states = f.get_slice("states")
                for i in rows:
                    _, a, b = self._where[keys[i]]
                    out[i] = states[a:b].to(device=device, dtype=dtype)
        return out

    def put(self, keys: list[bytes], states: list[torch.Tensor]) -> bool:
        """Store one shard of texts' states, written aside, flushed to disk and linked into place
        under the next free number. A failed write (a full disk, a file system without hard links)
        warns and stores nothing; returns whether the shard was stored."""
        if not keys:
            return True
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in states])]).astype(np.int64)
        tensors = {"keys": torch.from_numpy(np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, 16).copy()),
                   "offsets": torch.from_numpy(offsets),
                   "states": torch.cat([s.detach().cpu() for s in states]).contiguous()}
        tmp = self.folder / f".shard.{os.getpid()}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(tmp))
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            number = max([int(p.stem) for p in self.folder.glob("[0-9]*.safetensors") if p.stem.isdigit()] + [-1]) + 1
            while True:         # another process may take the same number: never replace its shard
                final = self.folder / f"{number:06d}.safetensors"
                try:
                    os.link(tmp, final)
                    break
                except FileExistsError:
                    number += 1
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            warnings.warn(f"{self.folder}: frozen-layer states not stored ({e})", stacklevel=2)
            return False
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        for i, k in enumerate(keys):
            self._where.setdefault(k, (final, int(offsets[i]), int(offsets[i + 1])))
        self._seen.add(final)
        return True
