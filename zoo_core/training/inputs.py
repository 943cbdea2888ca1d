"""What a run feeds its model: the backbone's data config, evaluation datasets (decoded pixels shared through
the pixel cache, :func:`zoo_core.cache.shared_pixels`) and the epoch samplers (one process or a shard per rank
under torchrun).

:func:`data_config_for` is public because ``compare`` and ``rank`` pre-decode with it
(:func:`zoo_core.training.shape.decode_once`) so that their entries hit the cache the runs then read.
"""

from __future__ import annotations

from typing import Any, Iterator

from torch.utils.data import Dataset, Sampler

from .. import data as zdata
from ..backbones.adapter import BackboneAdapter, DataConfig
from ..cache.service import shared_pixels
from ..distributed import DistContext, DistributedEpochSampler, ShardSampler, epoch_permutation
from .config import TrainConfig


class EpochSampler(Sampler[int]):
    """Shuffles with a generator seeded by ``seed + epoch``, so a resumed run sees the same order."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        return iter(epoch_permutation(self.n, self.seed, self.epoch))

    def __len__(self) -> int:
        return self.n


def sampler_for(n: int, seed: int, ctx: DistContext, shuffle: bool) -> Sampler[int]:
    """The sampler of ``n`` items for this process: the whole epoch, or this rank's part of it."""
    if ctx.enabled and shuffle:  # rank r gets perm[r::W]: together the same global batches as one process
        return DistributedEpochSampler(n, num_replicas=ctx.world_size, rank=ctx.rank, seed=seed)
    if ctx.enabled:  # evaluation: every item exactly once over all ranks (no padding), so sums are exact
        return ShardSampler(n, ctx.rank, ctx.world_size)
    return EpochSampler(n, seed, shuffle=shuffle)


def data_config_for(adapter: BackboneAdapter, cfg: TrainConfig) -> DataConfig:
    """The preprocessing of ``cfg.backbone`` with ``cfg.weights`` (at ``cfg.image_size`` when set).

    A local checkpoint file has no weights tag: it gets the family's default preprocessing."""
    weights = cfg.weights if isinstance(cfg.weights, str) and cfg.weights != "DEFAULT" and "/" not in str(cfg.weights) \
        and not str(cfg.weights).endswith((".pt", ".pth", ".safetensors")) else "DEFAULT"
    try:
        dc = adapter.data_config(cfg.backbone, weights)
    except Exception:  # noqa: BLE001 - a tag-less local checkpoint: the family's default preprocessing
        dc = adapter.data_config(cfg.backbone, "DEFAULT")
    return dc.with_image_size(cfg.image_size)


def eval_dataset(cfg: TrainConfig, split: Any, name: str, data_cfg: DataConfig, ctx: DistContext,
                 quiet: bool) -> Dataset:
    """Items ``(eval_transform(image) uint8, label)`` of a split: from the shared pixel cache, or decoded."""
    pixels = shared_pixels(cfg, split, name, data_cfg, ctx, quiet=quiet)
    if pixels is not None:
        return pixels.as_dataset()
    return zdata.Transformed(getattr(split, name), zdata.eval_transform(data_cfg))
