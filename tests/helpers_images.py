"""Tiny generated image folders for tests (PNG files written with PIL, no network), and the check of a PNG
that a run or a command wrote."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image, ImageDraw

SIZE = 40
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_size: tuple[int, int] = (0, 0)) -> None:
    """``path`` is a whole, decodable PNG file wider and taller than ``min_size`` (width, height) pixels."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as img:
        img.verify()  # raises on a truncated or corrupt file
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > min_size[0] and img.size[1] > min_size[1], (path, img.size)


def pattern_image(cls: int, index: int, size: int | tuple[int, int] = SIZE, seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 image of class ``cls`` (``size`` is W = H, or ``(W, H)``): noise plus a bright square in
    a class-specific corner.

    Class 0 puts the square top-left, class 1 bottom-right, class 2 top-right, class 3 bottom-left,
    further classes shift it; position and noise vary with ``index``, so images are never identical.
    """
    w, h = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed * 100_003 + cls * 1009 + index)
    img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    side = min(w, h) // 2
    corners = [(0, 0), (1, 1), (0, 1), (1, 0)]
    cy, cx = corners[cls % 4]
    shift = (cls // 4) * 3
    jitter = rng.integers(0, 4, 2)
    y0 = cy * (h - side) + (1 - 2 * cy) * (jitter[0] + shift)
    x0 = cx * (w - side) + (1 - 2 * cx) * (jitter[1] + shift)
    colour = np.array([255, 255 - 40 * (cls % 3), 200 + 10 * (cls % 5)], np.uint8)
    img[y0:y0 + side, x0:x0 + side] = colour
    return img


def make_folder(root: Path, num_classes: int = 2, per_class: int = 12, size: int | tuple[int, int] = SIZE,
                seed: int = 0, names: list[str] | None = None, counts: Mapping[str, int] | None = None,
                ext: str = "png") -> Path:
    """Write ``root/<class>/imgNN.<ext>`` for ``num_classes`` easy-to-tell classes of ``per_class`` images (or
    the classes ``names``, or ``counts``: class name → image count); returns ``root``.

    With ``counts`` the images are also seeded by the class name, so that classes written by separate calls
    never hold the same picture."""
    named = counts is not None
    if counts is None:
        counts = dict.fromkeys(names or [f"class{c}" for c in range(num_classes)], per_class)
    for c, (name, n) in enumerate(counts.items()):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        class_seed = seed + sum(map(ord, name)) if named else seed
        for i in range(n):
            Image.fromarray(pattern_image(c, i, size, class_seed)).save(d / f"img{i:02d}.{ext}")
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


ARROW_DIRECTIONS = {"right": 0, "down": 90, "left": 180, "up": 270}  # degrees clockwise from "right"


def arrow_image(direction: str, index: int, size: int = 48, seed: int = 0) -> Image.Image:
    """An RGB image of an arrow pointing ``direction`` (a key of :data:`ARROW_DIRECTIONS`) on a noisy
    background, with random colours, position, length and a few degrees of tilt.

    Mirroring left-right turns a left arrow into a right one (the label changes) but leaves an up or down
    arrow pointing the same way (the label survives): the two cases of the augmentation check."""
    rng = np.random.default_rng(seed * 100_003 + ARROW_DIRECTIONS[direction] * 1009 + index)
    bg = rng.integers(0, 256, 3)
    img = np.clip(bg + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    canvas = Image.fromarray(img)
    draw = ImageDraw.Draw(canvas)
    length, width = size * rng.uniform(0.5, 0.75), size * rng.uniform(0.07, 0.12)
    head = size * rng.uniform(0.18, 0.26)
    pts = np.array([(-length / 2, -width), (length / 2 - head, -width), (length / 2 - head, -head),
                    (length / 2, 0), (length / 2 - head, head), (length / 2 - head, width), (-length / 2, width)])
    angle = np.deg2rad(ARROW_DIRECTIONS[direction] + rng.uniform(-8, 8))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
    fg = (bg + 128 + rng.integers(-40, 40, 3)) % 256
    draw.polygon([tuple(p) for p in pts @ rot.T + centre], fill=tuple(int(c) for c in fg))
    return canvas


def make_arrows(root: Path, directions: tuple[str, ...], per_class: int = 24, size: int = 48, seed: int = 0) -> Path:
    """Write ``root/<direction>/imgNN.png`` arrows (:func:`arrow_image`); returns ``root``."""
    for d in directions:
        (root / d).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arrow_image(d, i, size, seed).save(root / d / f"img{i:02d}.png")
    return root


def make_digits(root: Path, per_class: int, size: int = 32) -> Path:
    """scikit-learn's handwritten 8×8 digits (the first ``per_class`` of each) as ``root/<digit>/<i>.png``, scaled
    to ``size`` px RGB: real, if small, images far from ImageNet's."""
    from sklearn.datasets import load_digits

    digits, seen = load_digits(), {}
    for i, (img, y) in enumerate(zip(digits.images, digits.target)):
        if seen.setdefault(y, 0) < per_class:
            seen[y] += 1
            (root / str(y)).mkdir(parents=True, exist_ok=True)
            pixels = Image.fromarray((img / 16 * 255).astype(np.uint8))
            pixels.resize((size, size), Image.Resampling.BICUBIC).convert("RGB").save(root / str(y) / f"{i:04d}.png")
    return root
