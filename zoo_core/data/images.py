"""One image → 8-bit RGB: decoding, the scan-time check, the content hash, and why a file is unreadable.

Every image the data room hands out passes through :func:`to_rgb`, whatever its source: a file
(:func:`load_image`), an item of a torch Dataset (:func:`as_rgb`: PIL, tensor or array) or a PIL image
given to ``zoo predict``. Every Pillow failure is put into words by one mapping, :func:`why_unreadable`.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import simplejpeg
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import v2

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""File extensions (lower case; files match in any case) that count as images."""

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
_HASH_CHUNK = 1 << 20


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scale_to_uint8(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    a = a.astype(np.float64)
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip(np.floor((a - lo) * (255.0 / (hi - lo)) + 0.5), 0, 255).astype(np.uint8)


class NoFinitePixels(ValueError):
    """A float image whose every value is NaN or infinite: nothing to show."""


def _float_to_uint8(a: np.ndarray) -> np.ndarray:
    """Float pixels to 8 bit: from [0, 1] when every finite value lies there, else stretched over the finite
    values' range; NaN and -inf draw as the lowest finite value, +inf as the highest."""
    finite = np.isfinite(a)
    if not finite.any():
        raise NoFinitePixels("float image without a finite pixel value (every value is NaN or infinite)")
    lo, hi = float(a[finite].min()), float(a[finite].max())
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    return _scale_to_uint8(np.where(np.isnan(a), lo, np.clip(a, lo, hi)), lo, hi)


def _gray_to_rgb(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a, "L").convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` loaded, EXIF-rotated and converted to 8-bit RGB.

    Grayscale, CMYK, YCbCr, LAB, … are converted; alpha (RGBA, LA, palette or RGB with transparency) is
    *composited on white*, what an image viewer shows (dropping alpha would expose whatever colour transparent
    pixels happen to store); 16-bit ``I;16*`` is scaled to 8 bit (``v * 255 / 65535``, not clipped); 32-bit
    ``I`` is used as-is when its maximum is ≤ 255, scaled as 16-bit within 0–65535, else min–max stretched;
    float ``F`` is scaled from [0, 1] (else min–max over its finite values; NaN and ±inf are drawn as the
    lowest/highest finite value, and a float image without any finite value is refused). Multi-frame files
    (GIF, TIFF) give their first frame.
    """
    img.load()  # also detaches the pixels from a file that a ``with Image.open()`` block closes
    if img.getexif().get(0x0112, 1) != 1:  # EXIF orientation
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _SIXTEEN_BIT:
        return _gray_to_rgb(_scale_to_uint8(np.asarray(img), 0, 65535))
    if mode == "I":
        a = np.asarray(img)
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0 and hi <= 255:
            return _gray_to_rgb(a.astype(np.uint8))
        if lo >= 0 and hi <= 65535:
            return _gray_to_rgb(_scale_to_uint8(a, 0, 65535))
        return _gray_to_rgb(_scale_to_uint8(a, lo, hi))
    if mode == "F":
        return _gray_to_rgb(_float_to_uint8(np.asarray(img, dtype=np.float64)))
    if mode in _ALPHA_MODES or "transparency" in img.info:
        return _composite_on_white(img)
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX, …


def why_unreadable(exc: BaseException) -> str:
    """Why an image could not be opened or decoded, in words: the one mapping from Pillow's exceptions
    (decompression bomb, unknown format, truncated or corrupt data, missing file) used by the folder scan,
    the data loaders and ``zoo predict``."""
    if isinstance(exc, Image.DecompressionBombError):
        return (f"image too large: {str(exc).rstrip('.')}; downscale it, or raise PIL.Image.MAX_IMAGE_PIXELS "
                "if you trust the file")
    if isinstance(exc, NoFinitePixels):
        return str(exc)
    if isinstance(exc, UnidentifiedImageError):
        return "not a readable image (unknown or corrupt format)"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "a folder, not an image file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return " ".join(f"corrupt image: {type(exc).__name__}: {exc}".split())


class UnreadableImage(DataError):
    """An image file that cannot be opened or decoded; ``path`` and ``reason`` (:func:`why_unreadable`)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"Cannot read image {self.path}: {reason}")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` as an RGB PIL image (:func:`to_rgb`); :class:`UnreadableImage` (a one-line
    ``DataError`` naming the file and saying why) if it cannot be read."""
    try:
        with Image.open(path) as img:
            return to_rgb(img)
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, ValueError, SyntaxError, struct.error, …
        raise UnreadableImage(path, why_unreadable(exc)) from exc


def check_image(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a usable image (``None`` when it is); cheap enough to run on every file.

    A zero-byte file fails at once; PNG: ``verify()`` (every chunk's CRC, no decoding); JPEG: a decode at
    1/8 scale with libjpeg's data-loss warnings as errors, so scan data cut short fails here even when the
    end-of-image marker was put back (baseline or progressive); other formats: a full decode (a float image
    without a finite value fails too). An image too large for Pillow (its decompression-bomb
    guard) fails too. Reasons come from :func:`why_unreadable`.
    """
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as img:
            if img.format == "PNG":
                img.verify()  # walks every chunk and checks its CRC, without decoding pixels
            else:
                if img.format == "JPEG":
                    return _check_jpeg(img, path)
                img.load()
                if img.mode == "F":
                    _float_to_uint8(np.asarray(img, dtype=np.float64))  # refuses a float image of NaN/inf
    except Exception as exc:  # noqa: BLE001 — any decoder failure means "skip this file"
        return why_unreadable(exc)
    return None


# libjpeg's warnings that mean lost image data (scan data cut short, or garbled); others, like extraneous bytes
# before a marker, are common in camera files that decode in full, and are let through
_JPEG_DATA_LOST = ("premature end of data segment", "premature end of jpeg file", "bad huffman code")


def _check_jpeg(img: Image.Image, path: str) -> str | None:
    """Why the JPEG ``img`` (open on ``path``) is not usable: a decode at 1/8 scale (DCT scaling, which still
    entropy-decodes every scan), then libjpeg-turbo's own warnings through simplejpeg, where a baseline file
    cut mid-scan with its end marker put back shows (Pillow fills the lost part with grey, silently)."""
    img.draft(img.mode, (1, 1))
    img.load()
    with open(path, "rb") as f:
        data = f.read()
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True, min_height=1, min_width=1)
    except ValueError as exc:  # strict: a libjpeg warning raised as an error
        if any(w in str(exc).lower() for w in _JPEG_DATA_LOST):
            return f"truncated or corrupt JPEG data ({' '.join(str(exc).split())})"
    return None


def content_hash(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file's bytes (hardware-accelerated on current x86 and ARM CPUs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def as_rgb(x: Any, where: str) -> Image.Image:
    """A Dataset item's image (PIL, CHW or HWC tensor, HxW(xC) ``uint8`` array) as RGB PIL (:func:`to_rgb`);
    anything else is a :class:`DataError` naming ``where``."""
    if isinstance(x, Image.Image):
        return to_rgb(x)
    if isinstance(x, torch.Tensor) and x.ndim in (2, 3):
        if x.ndim == 3 and x.shape[0] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
            x = x.permute(2, 0, 1)  # HWC tensor
        return to_rgb(v2.functional.to_pil_image(x.detach().cpu()))
    if isinstance(x, np.ndarray) and x.ndim in (2, 3):
        if x.dtype != np.uint8:
            raise DataError(f"{where}: numpy images must be uint8 HxW(xC), got dtype {x.dtype}")
        return to_rgb(Image.fromarray(x[..., 0] if x.ndim == 3 and x.shape[-1] == 1 else x))
    raise DataError(f"{where}: items must be (image, label) with a PIL image, CHW tensor or HWC uint8 array; "
                    f"got {type(x).__name__}. Pass the dataset without a transform.")
