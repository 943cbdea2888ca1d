"""The feature service: a run's frozen-backbone features of one split, and the split's decoded pixels.

:func:`split_features` is the one way to a run's features: the cached-feature training path, the LP-FT
probe and its augmentation check, ``compare --folds`` and ``rank`` all ask it, so one entry serves them all.
It makes the key a run of the config uses (:func:`run_feature_key`: backbone, weights, data config, data
fingerprint, split, resolved precision and the pass modes the pass policy tries for that many images of
a backbone of that size,
:func:`zoo_core.cache.policy.pass_modes`), reads the entry back when it is there and otherwise runs the
backbone (:func:`~zoo_core.cache.extract_features`), decoding through :func:`shared_pixels` when the config
shares decoding. Callers pass the config, never the key parts.

Seams: :func:`split_features` calls ``extract_features`` through this module's name, so tests can wrap it.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, Sequence

import torch
from torch import nn
from torch.utils.data import Subset

from .. import runtime
from ..backbones.adapter import BackboneAdapter, DataConfig
from ..data import augment as zaug
from ..distributed import DistContext
from . import policy
from .extract import FeatureSet, extract_features
from .keys import FeatureKey, cache_root, feature_key
from .pixels import PixelCache

log = logging.getLogger(__name__)


class FeatureOptions(Protocol):
    """The run options the feature service reads (a :class:`zoo_core.TrainConfig` has them all)."""

    backbone: str
    weights: Any
    precision: str
    batch_size: int
    num_workers: int | None
    cache_features: bool
    share_decoding: bool


def shared_pixels(cfg: FeatureOptions, split: Any, name: str, data_cfg: DataConfig, ctx: DistContext | None = None,
                  *, quiet: bool = False) -> PixelCache | None:
    """The ``name`` split's decoded pixels from the shared cache when ``cfg.share_decoding``, else None
    (also under torchrun, where every rank decodes its own shard, and when the cache folder cannot be
    written: the images are then decoded on the fly, the same pixels)."""
    if not cfg.share_decoding or (ctx is not None and ctx.enabled):
        return None
    try:
        return PixelCache.build(getattr(split, name), data_cfg, fingerprint=split.fingerprint, split=name,
                                num_workers=cfg.num_workers, progress=not quiet)
    except OSError as exc:  # the cache folder cannot be written: decode on the fly (the same pixels)
        log.warning("cannot write the pixel cache in %s (%s: %s); decoding the %s images on the fly instead",
                    cache_root() / "pixels", type(exc).__name__, exc.strerror or exc, name)
        return None


def run_feature_key(cfg: FeatureOptions, split: Any, part: str, data_cfg: DataConfig, device: torch.device,
                    n_images: int, n_params: int | None = None) -> FeatureKey | None:
    """The key under which a run of ``cfg`` caches ``n_images`` features of ``split``'s ``part`` on ``device``
    with a backbone of ``n_params`` parameters (:func:`~zoo_core.cache.policy.backbone_params`); None when
    ``cfg.cache_features`` is off."""
    if not cfg.cache_features:
        return None
    return feature_key(backbone=cfg.backbone, weights=str(cfg.weights), data_config=data_cfg,
                       fingerprint=split.fingerprint, split=part,
                       precision=runtime.resolve_precision(cfg.precision, device),
                       pass_modes=policy.pass_modes(cfg.precision, device, n_images, n_params))


def split_features(cfg: FeatureOptions, split: Any, name: str, model: nn.Module, adapter: BackboneAdapter,
                   data_cfg: DataConfig, device: torch.device, ctx: DistContext | None = None, *,
                   quiet: bool = True, view: str | None = None, rows: Sequence[int] | None = None) -> FeatureSet:
    """The features of ``split``'s ``name`` split under ``model``'s frozen backbone, through the feature
    cache under the key a run of ``cfg`` uses.

    ``view`` names a check view (:func:`zoo_core.data.augment.check_view`, seeded per image) to extract instead of
    the evaluation view, of the images ``rows`` (a subsample that depends only on the split: it is in the key
    by its size), under a key of their own."""
    part = name if view is None else f"{name}+{view}-view" + ("" if rows is None else f"@{len(rows)}")
    images, transform, pixels = getattr(split, name), None, None
    if view is not None:
        images = images if rows is None else Subset(images, list(rows))
        images = zaug.SeededView(images, zaug.check_view(data_cfg, view), zaug.VIEW_SEED)
        transform = zaug.as_is
    key = run_feature_key(cfg, split, part, data_cfg, device, len(images), policy.backbone_params(model, adapter))
    if view is None and (key is None or not (cache_root() / "features" / key).is_dir()):  # a hit: no pixels
        pixels = shared_pixels(cfg, split, name, data_cfg, ctx, quiet=quiet)
    return extract_features(model, adapter, images, data_cfg, key=key, batch_size=cfg.batch_size,
                            device=device, precision=cfg.precision, pixels=pixels, transform=transform,
                            num_workers=cfg.num_workers, progress=not quiet, ctx=ctx)
