"""Images as the library API takes them: paths, PIL images and tensors, under one tensor convention.

A tensor is one image ``[3, H, W]`` (or ``[1, H, W]`` grey) or a batch ``[B, 3, H, W]``, **not yet resized
or normalised**, in one of two conventions:

* ``uint8`` with values 0–255 (torchvision's ``read_image`` and ``PILToTensor``);
* floating point with values 0–1 (torchvision's ``ToTensor``), quantised to 8 bits like an image file.

Anything else is ambiguous and refused in one line: a float tensor with values outside 0–1 (0–255 floats,
or an already normalised batch: the backbone's own normalisation is applied here), and a ``uint8`` tensor
whose values are all 0 or 1 (a 0–1 image cast to ``uint8``).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Union

import torch
from PIL import Image

from ..backbones.adapter import DataConfig
from ..errors import DataError
from .images import load_image, to_rgb
from .transforms import eval_transform, normalize

ImageInput = Union[str, "os.PathLike[str]", Image.Image, torch.Tensor]
"""One image (path, PIL image, ``[C, H, W]`` tensor) or a ``[B, C, H, W]`` batch tensor."""


def _checked(x: torch.Tensor, where: str) -> torch.Tensor:
    """``x`` (``[C, H, W]``) as ``uint8`` 0–255 RGB, or a one-line DataError for the ambiguous cases."""
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise DataError(f"{where}: image tensors must be [3, H, W] (or [B, 3, H, W]), got shape {tuple(x.shape)}")
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        if x.numel() and int(x.max()) <= 1:
            raise DataError(f"{where}: a uint8 image tensor with values only 0 and 1 looks like a 0–1 image cast "
                            "to uint8; pass uint8 0–255, or the float 0–1 tensor itself")
    elif x.is_floating_point():
        lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
        if lo < 0 or hi > 1:
            raise DataError(f"{where}: a float image tensor must hold values in 0–1 (ToTensor's convention), this one "
                            f"spans {lo:.3g}–{hi:.3g}; pass uint8 0–255 (e.g. x.round().to(torch.uint8) for 0–255 "
                            "floats), and never an already normalised tensor: the backbone's normalisation is applied "
                            "here")
        x = (x.float() * 255).round().to(torch.uint8)
    else:
        raise DataError(f"{where}: image tensors must be uint8 (0–255) or float (0–1), got {x.dtype}")
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def as_image(x: Any, where: str = "image") -> Image.Image | torch.Tensor:
    """One image as an RGB PIL image (from a path or PIL) or a ``uint8 [3, H, W]`` tensor (checked)."""
    if isinstance(x, torch.Tensor):
        return _checked(x, where)
    if isinstance(x, Image.Image):
        return to_rgb(x)
    if isinstance(x, (str, os.PathLike)):
        return load_image(x)
    raise DataError(f"{where}: expected an image path, a PIL image or a tensor, got {type(x).__name__}")


def image_list(images: ImageInput | Iterable[ImageInput]) -> list[Any]:
    """``images`` as a list of single images: one image becomes a list of one, a batch tensor its images."""
    if isinstance(images, torch.Tensor):
        if images.ndim == 4:
            return list(images.unbind(0))
        return [images]
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    out: list[Any] = []
    for item in images:
        out += list(item.unbind(0)) if isinstance(item, torch.Tensor) and item.ndim == 4 else [item]
    return out


class Preprocess:
    """A backbone's evaluation preprocessing: image (path, PIL, tensor) → normalised ``float32 [3, H, W]``.

    Resize the shorter side to ``data_config.resize_size``, center-crop to its ``image_size``, scale to 0–1
    and normalise with its mean and std: what timm's ``create_transform(**resolve_data_config(...))`` and
    torchvision's ``weights.transforms()`` do. :meth:`batch` stacks several images into ``[B, 3, H, W]``.
    """

    def __init__(self, data_config: DataConfig) -> None:
        self.data_config = data_config
        self._resize_crop = eval_transform(data_config)

    def uint8(self, image: Any) -> torch.Tensor:
        """``image`` resized and center-cropped, not normalised: ``uint8 [3, H, W]``."""
        return self._resize_crop(as_image(image))

    def __call__(self, image: Any) -> torch.Tensor:
        """``image`` ready for the model: ``float32 [3, H, W]``."""
        return normalize(self.uint8(image)[None], self.data_config)[0]

    def batch(self, images: ImageInput | Iterable[ImageInput], device: str | torch.device = "cpu") -> torch.Tensor:
        """Several images (a list, or a batch tensor) ready for the model: ``float32 [B, 3, H, W]`` on ``device``."""
        items = image_list(images)
        if not items:
            raise DataError("no images given")
        return normalize(torch.stack([self.uint8(x) for x in items]).to(device), self.data_config)

    def __repr__(self) -> str:
        dc = self.data_config
        return (f"Preprocess(resize={dc.resize_size}, center_crop={list(dc.image_size)}, "
                f"interpolation={dc.interpolation!r}, mean={list(dc.mean)}, std={list(dc.std)})")
