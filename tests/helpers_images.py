"""Tiny generated image folders for trainer tests (PNG files written with PIL, no network)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 40


def pattern_image(cls: int, index: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 image of class ``cls``: noise plus a bright square in a class-specific corner.

    Class 0 puts the square top-left, class 1 bottom-right, class 2 top-right, class 3 bottom-left,
    further classes shift it; position and noise vary with ``index``, so images are never identical.
    """
    rng = np.random.default_rng(seed * 100_003 + cls * 1009 + index)
    img = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
    side = size // 2
    corners = [(0, 0), (1, 1), (0, 1), (1, 0)]
    cy, cx = corners[cls % 4]
    shift = (cls // 4) * 3
    jitter = rng.integers(0, 4, 2)
    y0 = cy * (size - side) + (1 - 2 * cy) * (jitter[0] + shift)
    x0 = cx * (size - side) + (1 - 2 * cx) * (jitter[1] + shift)
    colour = np.array([255, 255 - 40 * (cls % 3), 200 + 10 * (cls % 5)], np.uint8)
    img[y0:y0 + side, x0:x0 + side] = colour
    return img


def make_folder(root: Path, num_classes: int = 2, per_class: int = 12, size: int = SIZE, seed: int = 0,
                names: list[str] | None = None) -> Path:
    """Write ``root/<class>/imgNN.png`` for ``num_classes`` easy-to-tell classes; returns ``root``."""
    names = names or [f"class{c}" for c in range(num_classes)]
    for c, name in enumerate(names):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(pattern_image(c, i, size, seed)).save(d / f"img{i:02d}.png")
    return root


def write_image(path: Path, cls: int, index: int, mode: str = "RGB", size: int = SIZE) -> Path:
    """Write one class-``cls`` image converted to PIL ``mode`` (``"I;16"`` gives a 16-bit gray PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = pattern_image(cls, index, size)
    if mode == "I;16":
        gray = np.asarray(Image.fromarray(rgb).convert("L"), np.uint16) * 257
        Image.fromarray(gray).save(path)
    elif mode == "P":
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path)
    elif mode == "RGBA":
        rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
        rgba[:4, :4, 3] = 0
        Image.fromarray(rgba, "RGBA").save(path)
    else:
        Image.fromarray(rgb).convert(mode).save(path)
    return path


def cut_scan_jpeg(path: Path, seed: int = 5) -> Path:
    """Write a progressive JPEG whose scan data is cut where Pillow's full decode fails, with the
    end-of-image marker put back (a file a training worker would abort on); returns ``path``."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(
        buf, "JPEG", quality=90, progressive=True)
    good = buf.getvalue()
    sos = good.find(b"\xff\xda")
    for frac in np.linspace(0.2, 0.95, 40):
        cut = good[: sos + int((len(good) - sos) * frac)] + b"\xff\xd9"
        try:
            with Image.open(io.BytesIO(cut)) as img:
                img.load()
        except OSError:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(cut)
            return path
    raise AssertionError("no cut position made the JPEG undecodable")
