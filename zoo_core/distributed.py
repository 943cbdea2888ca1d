"""torch.distributed glue: the trainer runs unchanged as one process or under ``torchrun``.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process group is initialised with gloo
on CPU and nccl on CUDA, the model is wrapped in ``DistributedDataParallel``, every rank reads its
shard through ``DistributedSampler``, metrics are summed across ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    """Rank facts of this process; a single process has ``world_size == 1``."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files and prints progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when running with several processes."""
        return self.world_size > 1

    @classmethod
    def from_env(cls, device_type: str = "cpu") -> DistContext:
        """Join the process group torchrun describes in the environment (no-op without it)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        initialised = False
        if not dist.is_initialized():
            backend = "nccl" if device_type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
            initialised = True
        return cls(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size(), initialised)

    def device(self, requested: torch.device) -> torch.device:
        """On CUDA, each local rank uses its own GPU."""
        if requested.type == "cuda" and self.enabled:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return requested

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """Wrap in DistributedDataParallel when distributed (only if something trains)."""
        if not self.enabled or not any(p.requires_grad for p in model.parameters()):
            return model
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Sum a list of numbers over all ranks."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.enabled:
            dist.barrier()

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Destroy the process group if this context created it."""
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()
