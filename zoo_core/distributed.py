"""torch.distributed glue: the trainer runs unchanged as one process or under ``torchrun``.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process group is initialised with gloo
on CPU and nccl on CUDA, the model is wrapped in ``DistributedDataParallel``, every rank reads its
shard through :class:`DistributedEpochSampler`, metrics are summed across ranks, and only rank 0 writes
files.

Batch-size semantics: ``batch_size`` is the **global** batch. Each of the ``W`` processes takes
``batch_size // W`` samples per step (:func:`per_rank_batch`), and the training shard of rank ``r`` is
``perm[r::W]`` of the same per-epoch permutation a single process uses (:func:`epoch_permutation`),
so step ``k`` of a ``W``-process run sees exactly the images of step ``k`` of a single-process run with
the same config, and DDP's gradient average over ``W`` equal shards is the gradient of their mean
loss. The learning rate therefore needs no change when the number of processes changes.

``zoo train --nproc N`` calls :func:`launch_torchrun`, which re-executes the command under
``python -m torch.distributed.run --nproc_per_node N``.
"""

from __future__ import annotations

import atexit
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler
from torch.utils.data.distributed import DistributedSampler

from .errors import ZooError

_GATHER_CHUNK_BYTES = 64 << 20  # rows of features moved per all_gather call (bounds peak memory)


@dataclass
class DistContext:
    """Rank facts of this process; a single process has ``world_size == 1``."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    initialised_here: bool = False
    backend: str = ""

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files and prints progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when running with several processes."""
        return self.world_size > 1

    @property
    def comm_device(self) -> torch.device:
        """Where tensors for collectives live: this rank's GPU under nccl, else the CPU."""
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    @classmethod
    def from_env(cls, device_type: str = "cpu") -> DistContext:
        """Join the process group torchrun describes in the environment (no-op without it)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        initialised = False
        if not dist.is_initialized():
            backend = "nccl" if device_type == "cuda" else "gloo"
            if backend == "nccl":  # before init, so nccl's communicator binds this rank's GPU
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend=backend)
            # kept for the life of the process: a later train() in the same script reuses it (destroying and
            # re-creating the default group reuses its store keys and races with slower ranks)
            atexit.register(_destroy_at_exit)
            initialised = True
        return cls(dist.get_rank(), local_rank, dist.get_world_size(), initialised, dist.get_backend())

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

    def sum(self, values: list[float], device: torch.device | None = None) -> list[float]:
        """Sum a list of numbers over all ranks (every rank gets the same result)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t)
        return t.tolist()

    def all_true(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on every rank."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def max_int(self, value: int) -> int:
        """The largest ``value`` over all ranks."""
        if not self.enabled:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.enabled:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.comm_device if self.backend == "nccl" else None)
        return box[0]

    def all_gather_object(self, obj: object) -> list[object]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sync_module(self, module: nn.Module, *, buffers_only: bool = False) -> None:
        """Copy rank 0's parameters (unless ``buffers_only``) and buffers into ``module`` on every rank.

        Used before evaluation (BatchNorm running statistics drift apart per rank during a DDP epoch;
        rank 0's are the ones saved in the checkpoint) and after building the model.
        """
        if not self.enabled:
            return
        tensors = list(module.buffers()) + ([] if buffers_only else list(module.parameters()))
        with torch.no_grad():
            for t in tensors:
                if t.device.type == "meta" or t.numel() == 0:
                    continue
                if t.device == self.comm_device:
                    dist.broadcast(t.data, src=0)
                else:
                    tmp = t.detach().to(self.comm_device)
                    dist.broadcast(tmp, src=0)
                    t.data.copy_(tmp)

    def close(self) -> None:
        """End of a run. The process group lives until the process exits (no barrier: a rank that failed
        must not wait here for ranks stuck elsewhere; torchrun stops them)."""


def _destroy_at_exit() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ---- sharding ---------------------------------------------------------------------------------------
def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Per-process batch for a **global** ``batch_size``; a clear error if it does not divide evenly."""
    if batch_size < world_size or batch_size % world_size:
        raise ZooError(
            f"batch_size (--batch-size) {batch_size} is the global batch and must be a multiple of the "
            f"{world_size} processes (nodes × --nproc_per_node); use e.g. "
            f"{max(world_size, batch_size - batch_size % world_size)}")
    return batch_size // world_size


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """The training order of ``epoch``: identical for a single process and for every rank of a DDP run."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def shard_range(n: int, rank: int, world_size: int) -> range:
    """Contiguous block of ``range(n)`` for ``rank``; the blocks in rank order concatenate to ``range(n)``."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


class DistributedEpochSampler(DistributedSampler):
    """``DistributedSampler`` whose shard ``r`` is ``perm[r::W]`` of :func:`epoch_permutation`.

    Consecutive per-rank batches of ``B / W`` therefore together form the same global batches of ``B``
    a single process draws. Like ``DistributedSampler`` (``drop_last=False``) the permutation is padded
    by repeating its first ``ceil(N / W) * W - N`` indices so every rank runs the same number of steps.
    Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, n: int, *, num_replicas: int, rank: int, seed: int = 0, shuffle: bool = True) -> None:
        super().__init__(range(n), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.n = n

    def __iter__(self) -> Iterator[int]:
        indices = epoch_permutation(self.n, self.seed, self.epoch) if self.shuffle else list(range(self.n))
        pad = self.total_size - len(indices)
        if pad > 0 and indices:
            indices += (indices * math.ceil(pad / len(indices)))[:pad]
        return iter(indices[self.rank:self.total_size:self.num_replicas])


class ShardSampler(Sampler[int]):
    """``range(n)[rank::world_size]`` without padding, for exact evaluation (sum the per-rank counts)."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        """Evaluation order never changes; present for symmetry with the training samplers."""

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def all_gather_rows(ctx: DistContext, local: np.ndarray, n: int, out: np.ndarray | None) -> None:
    """Gather each rank's contiguous block (:func:`shard_range`) of an ``[n, ...]`` array into ``out``.

    Every rank passes its own rows in ``local``; ``out`` (``None`` on ranks that do not need the
    result) receives all ``n`` rows in the original order. Rows move in chunks of about 64 MiB, so the
    extra memory per call is bounded whatever ``n``.
    """
    if not ctx.enabled:
        if out is not None:
            out[: len(local)] = local
        return
    row_shape = tuple(local.shape[1:])
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * local.dtype.itemsize)
    blocks = [shard_range(n, r, ctx.world_size) for r in range(ctx.world_size)]
    longest = max(len(b) for b in blocks)
    chunk = max(1, _GATHER_CHUNK_BYTES // row_bytes)
    dev = ctx.comm_device
    src = torch.from_numpy(np.ascontiguousarray(local))
    for i in range(0, longest, chunk):
        rows = min(chunk, longest - i)
        send = torch.zeros((rows, *row_shape), dtype=src.dtype, device=dev)
        mine = src[i:i + rows]
        send[: len(mine)] = mine.to(dev)
        recv = [torch.empty_like(send) for _ in range(ctx.world_size)]
        dist.all_gather(recv, send)
        if out is None:
            continue
        for r, block in enumerate(blocks):
            take = max(0, min(rows, len(block) - i))
            if take:
                out[block.start + i: block.start + i + take] = recv[r][:take].cpu().numpy()


# ---- launching --------------------------------------------------------------------------------------
_RDZV_OPTIONS = ("--standalone", "--rdzv-endpoint", "--rdzv_endpoint", "--rdzv-backend", "--rdzv_backend",
                 "--master-addr", "--master_addr", "--master-port", "--master_port", "--nnodes")


def _strip_nproc(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    return out


def torchrun_command(argv: Sequence[str], nproc: int, extra: Sequence[str] | None = None) -> list[str]:
    """The command :func:`launch_torchrun` runs: ``python -m torch.distributed.run … -m zoo_core.cli train …``.

    ``argv`` are the ``zoo train`` arguments (a leading ``train`` is accepted and ``--nproc`` is
    dropped); ``extra`` are torchrun options (``--nnodes 2 --rdzv-endpoint host:29400 …``). Without
    any rendezvous option, ``--standalone`` (one machine, a free local port) is added.
    """
    if nproc < 1:
        raise ZooError(f"--nproc must be at least 1, got {nproc}")
    args = _strip_nproc(argv)
    if args and args[0] == "train":
        args = args[1:]
    extra = list(extra or [])
    if not any(e.split("=", 1)[0] in _RDZV_OPTIONS for e in extra):
        extra = ["--standalone", *extra]
    return [sys.executable, "-m", "torch.distributed.run", *extra, "--nproc_per_node", str(nproc),
            "-m", "zoo_core.cli", "train", *args]


def launch_torchrun(argv: list[str], nproc: int, extra: list[str] | None = None) -> int:
    """Run ``zoo train ARGV`` on ``nproc`` processes of this machine under torchrun; its exit status.

    ``OMP_NUM_THREADS`` defaults to the CPU count divided by ``nproc`` (torchrun would set 1).
    """
    cmd = torchrun_command(argv, nproc, extra)
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            cpus = os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, cpus // max(1, nproc)))
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130
