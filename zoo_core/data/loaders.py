"""Seeded, reproducible DataLoaders: the same seed gives the same order and the same worker seeds."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

SMALL_DATASET = 512
"""Below this many items :func:`make_loader` uses no workers by default (their start-up costs more than
they save)."""


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed ``random`` and NumPy from the worker's torch seed (set by the loader)."""
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_num_workers(num_items: int) -> int:
    """Workers :func:`make_loader` uses by default: 0 below :data:`SMALL_DATASET` items, else
    ``min(cpus - 1, 8)``."""
    if num_items < SMALL_DATASET:
        return 0
    return max(0, min(usable_cpus() - 1, 8))


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int | None = None,
                sampler: Any = None, drop_last: bool = False, device: str | torch.device = "cpu") -> DataLoader:
    """A reproducible DataLoader: same ``seed`` → same order and same worker seeds.

    ``num_workers=None`` picks :func:`auto_num_workers`; workers persist across epochs; memory is pinned
    only for CUDA. A ``sampler`` takes precedence over ``shuffle``. Randomness in transforms comes from
    torch's RNG, seeded per worker here; seed the main process yourself when ``num_workers=0``.
    """
    if num_workers is None:
        num_workers = auto_num_workers(len(dataset))  # type: ignore[arg-type]
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=bool(shuffle) and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
    )
