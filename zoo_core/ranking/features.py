"""Each candidate's frozen features on the training split, or on a stratified subsample of it, through the
feature cache.

The features are extracted exactly as a feature-extraction training run extracts them: the run's own setup
(:func:`zoo_core.training.build_run`: seeding, model, data config, device) and the feature service
(:func:`zoo_core.cache.split_features`), so the cache key is the run's and a later ``train`` or
``compare`` of the same backbone, weights, input size, data, seed and precision reads the training split
back instead of running the backbone again. A ``budget`` subsample is another dataset: its fingerprint
(and so every key made from it) includes the digest of the chosen rows, so its features never stand in for
the full split's.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.utils.data import Subset

from ..backbones.weights import weights_label
from ..cache import FeatureSet, extraction_speed, split_features
from ..data import DataSplit, known_labels
from ..errors import DataError, WeightsError
from ..headfit.split import stratified_subsample
from ..training import TrainConfig, build_run
from ..training.config import OPTIONS
from ..training.fallback import falls_back
from ..training.shape import decode_once
from ..util import digest

RANK_OPTIONS = tuple(name for name, o in OPTIONS.items() if o.rank)
"""The :class:`~zoo_core.TrainConfig` fields ``rank`` takes (the ones that decide the features; ``rank=True``
in their :class:`~zoo_core.training.options.Option`)."""


@dataclass(frozen=True)
class Extracted:
    """One candidate's training-split features and how they were obtained."""

    features: FeatureSet
    weights: str  # "pretrained", RANDOM_INIT, or the weight tag / file asked for
    images_per_s: float | None  # the backbone's extraction speed when these features were made
    seconds: float  # model set-up plus extraction (or the cache read) in this call


def subsample(split: DataSplit, budget: int | None, seed: int) -> DataSplit:
    """``split`` itself without a budget (or one of at least its training images); else the same split with
    its training part cut to a stratified, seeded subsample of about ``budget`` images (per class its share,
    at least one) and a fingerprint of its own."""
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
        raise DataError(f"budget must be a positive number of images, got {budget!r} (--budget)")
    n = len(split.train)  # type: ignore[arg-type]
    if budget is None or budget >= n:
        return split
    labels = torch.tensor(known_labels(split.train), dtype=torch.int64)
    rows = stratified_subsample(torch.arange(n), labels, budget, seed).tolist()
    fingerprint = digest({"base": split.fingerprint, "subsample": "stratified", "budget": budget, "seed": seed},
                         [",".join(map(str, rows))])
    train = Subset(split.train, rows)
    train.targets = labels[rows].tolist()  # type: ignore[attr-defined]
    return dataclasses.replace(split, train=train, fingerprint=fingerprint)


def candidate_config(backbone: str, options: dict[str, Any], progress: bool) -> TrainConfig:
    """The feature-extraction run config whose training-split features rank scores for ``backbone``."""
    return TrainConfig(**{**options, "backbone": backbone, "strategy": "feature-extraction", "share_decoding": True,
                          "cache_features": True, "augment": False, "progress": progress})


def predecode(cfg: TrainConfig, split: DataSplit) -> None:
    """Decode the training images at this backbone's input size into the shared pixel cache (a hit after the
    first backbone of that size), so no entry's time includes the one-off decoding."""
    decode_once(cfg, split, progress=cfg.progress, only=("train",))


def extract(cfg: TrainConfig, split: DataSplit, *, fallback_random: bool,
            say: Callable[[str], None]) -> Extracted:
    """The training-split features of ``cfg.backbone``; with ``fallback_random``, from a random init when its
    pretrained weights are unavailable (a local weights file that fails is always an error)."""
    t0 = time.perf_counter()
    try:
        state = build_run(cfg, split)
    except WeightsError as exc:
        if not falls_back(cfg.weights, exc, allowed=fallback_random, say=say, who=f"zoo rank: {cfg.backbone}",
                          going_on="ranking it"):
            raise
        cfg = dataclasses.replace(cfg, weights=None)
        state = build_run(cfg, split)
    features = split_features(state.cfg, state.split, "train", state.model, state.adapter, state.data_cfg,
                              state.device, quiet=not cfg.progress)
    return Extracted(features, weights_label(cfg.weights), extraction_speed(features), time.perf_counter() - t0)
