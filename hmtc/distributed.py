"""Data-parallel training under ``torchrun`` (DDP: gloo on CPU, NCCL on GPU).

Every rank builds the same seeded global batches and takes its own contiguous slice of each,
so the averaged gradient is that of the single-process run with the same global batch.
Only rank 0 writes files; every rank scores dev itself, so all take the same decisions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, batch: np.ndarray) -> np.ndarray:
        """This rank's slice of a global batch."""
        return np.array_split(batch, self.world)[self.rank] if self.active else batch

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device_name: str = "auto") -> tuple[DistContext, torch.device | None]:
    """Join the process group torchrun describes in the environment; (context, device or None)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), None
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return DistContext(world, rank, local), device
