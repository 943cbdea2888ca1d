"""Preprocessing at the backbone's :class:`~zoo_core.DataConfig`: the evaluation view and normalisation.

A transform turns a PIL image into a ``uint8`` ``[3, H, W]`` tensor at the config's size (so workers ship
bytes, not floats); :func:`normalize` then turns a batch into normalised ``float32`` on the batch's device,
so the mean/std work runs on the GPU, not in workers. The training views are in :mod:`.augment`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

import torch
from torchvision.transforms import InterpolationMode, v2

from ..backbones.adapter import DataConfig
from ..errors import DataError

_PIL_ONLY = {InterpolationMode.BOX, InterpolationMode.HAMMING}  # no tensor kernels for these


def interpolation(name: str) -> InterpolationMode:
    """The torchvision mode of a :class:`~zoo_core.DataConfig` interpolation name (timm's ``"random"`` is
    bilinear, its eval-time meaning); an unknown name is a one-line :class:`DataError`."""
    name = (name or "bilinear").lower()
    if name == "random":
        name = "bilinear"
    try:
        return InterpolationMode(name)
    except ValueError:
        choices = ", ".join(m.value for m in InterpolationMode)
        raise DataError(f"Unknown interpolation {name!r} in DataConfig; use one of {choices}.") from None


def pipeline(resize: Any, crop: list[Any], mode: InterpolationMode) -> v2.Compose:
    """PIL → ``uint8 [3, H, W]`` through ``resize`` then ``crop``, on tensors where torch has ``mode``.

    uint8 tensor kernels (antialiased, vectorised) beat PIL's resize about 2x, so the image is converted
    first when torch has the interpolation; otherwise the PIL image is resized and converted last.
    """
    if mode in _PIL_ONLY:
        return v2.Compose([resize, *crop, v2.PILToTensor()])
    return v2.Compose([v2.PILToTensor(), resize, *crop])


def eval_transform(cfg: DataConfig) -> Callable[[Any], torch.Tensor]:
    """PIL → ``uint8 [3, H, W]``: resize the shorter side to ``cfg.resize_size``, center-crop to ``cfg.image_size``."""
    mode = interpolation(cfg.interpolation)
    return pipeline(v2.Resize(cfg.resize_size, interpolation=mode, antialias=True), [v2.CenterCrop(cfg.image_size)],
                    mode)


@lru_cache(maxsize=64)
def _norm_constants(mean: tuple[float, ...], std: tuple[float, ...],
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    scale = (1.0 / (255.0 * s)).to(torch.float32).view(-1, 1, 1)
    shift = (-m / s).to(torch.float32).view(-1, 1, 1)
    return scale.to(device), shift.to(device)


def normalize(batch: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """``uint8``/float batch ``[B, C, H, W]`` (0–255 scale) → ``float32 (x/255 - mean)/std`` on its device."""
    if batch.ndim < 3 or batch.shape[-3] != len(cfg.mean):
        raise DataError(f"normalize expects [B, {len(cfg.mean)}, H, W] batches, got shape {tuple(batch.shape)}.")
    scale, shift = _norm_constants(tuple(cfg.mean), tuple(cfg.std), batch.device)
    return torch.addcmul(shift, batch.to(torch.float32), scale)  # one fused multiply-add, never in place
