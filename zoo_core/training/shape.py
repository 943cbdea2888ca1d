"""What a run of a config does, decided once: :class:`RunShape`, made by :func:`run_shape`.

Whether a run takes the cached-feature path, whether it fits the LP-FT probe first, which augmentations it
starts from and which splits it reads decoded through the shared pixel cache all follow from the config
and its strategy. :func:`run_shape` is the one place that works them out; the run (``RunState.shape``,
:func:`zoo_core.training.build_run`), ``compare`` (which entries it pre-decodes, :func:`decode_once`; which
it refolds, :mod:`zoo_core.comparison.folds`) and ``rank`` read the answer instead of deriving it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backbones import registry
from ..cache.service import shared_pixels
from ..data import augment as zaug
from ..strategies import Strategy, get_strategy
from .config import TrainConfig
from .inputs import data_config_for


@dataclass(frozen=True)
class RunShape:
    """The choices a run's config implies, before any data or model is loaded."""

    cached: bool  # frozen backbone, no augmentation: the backbone runs once, the head trains on its features
    # (kept in the disk cache, or only in memory with cache_features off: the same result either way)
    augment: tuple[str, ...]  # the training augmentations as the policy resolved them (auto: the ones to check)
    augment_auto: bool  # augment="auto": the probe's check narrows `augment` before training
    from_probe: bool  # LP-FT: training starts from the linear probe's head (head_init="probe")
    probe: bool  # the linear probe is fit before training (from_probe, or augment_auto's check)
    shared: tuple[str, ...]  # splits read decoded from the shared pixel cache (share_decoding), decoded once


def run_shape(cfg: TrainConfig, strategy: Strategy | None = None) -> RunShape:
    """The shape of a run of ``cfg`` under ``strategy`` (default: the one ``cfg.strategy`` names)."""
    strategy = strategy or get_strategy(cfg.strategy)
    policy = zaug.for_strategy(cfg.augment, strategy.default_augment)
    auto = policy == zaug.AUTO
    augment: tuple[str, ...] = zaug.DEFAULT if auto else policy  # type: ignore[assignment]
    cached = strategy.backbone_frozen_throughout() and not augment  # cache off: the features stay in memory
    trains = strategy.trains_backbone()
    from_probe = cfg.head_init == "probe" and trains and not cached
    augment_auto = auto and not cached
    probe = trains and not cached and (from_probe or augment_auto)
    crops = zaug.crop_of(augment) is not None  # random crops decode the training images every epoch
    shared = (("train", "val") if probe or not crops else ("val",)) if cfg.share_decoding else ()
    return RunShape(cached=cached, augment=augment, augment_auto=augment_auto, from_probe=from_probe,
                    probe=probe, shared=shared)


def decode_once(cfg: TrainConfig, split: Any, *, progress: bool, only: tuple[str, ...] | None = None) -> None:
    """Fill the shared pixel cache for the splits a run of ``cfg`` reads decoded (``only``: those of them),
    so that no entry's training time or peak memory includes the one-off decoding (a hit after the first
    entry of the same input size)."""
    names = [name for name in run_shape(cfg).shared if only is None or name in only]
    if not names:
        return
    adapter, _ = registry.get_adapter(cfg.backbone)
    data_cfg = data_config_for(adapter, cfg)
    for name in names:
        shared_pixels(cfg, split, name, data_cfg, None, quiet=not progress)
