"""A built-in demo dataset, drawn in code: textured shapes in natural-looking clutter (no network, no files).

:func:`make_demo_dataset` writes an image folder ``root/<class>/<i>.png`` that :func:`zoo_core.data.load_data`
reads like any other. Each class is a *shape* (:data:`DEMO_CLASSES`); everything else is nuisance drawn
from the same distributions for every class, so only shape/structure tells the classes apart:

* background: smooth multi-octave value noise ("Perlin-like"), stripes, gradients or blotches mixing
  two random colours, under a smooth random illumination field;
* the shape: random position, scale, rotation, mild anisotropic stretch and vertex jitter, filled with
  its own random texture and colours (a minimum colour contrast to the background keeps it visible);
* clutter: random line segments and irregular blobs behind the shape, and sometimes a blob in front
  of it (partial occlusion);
* camera: Gaussian blur, sensor noise and a JPEG round trip at a random quality.

Every image has its own RNG stream keyed by ``(seed, class index, image index)``, so the output is
byte-identical for the same parameters (same Pillow/zlib build). Files are written atomically and a
small manifest (:data:`MANIFEST_NAME`, a hidden file the data loader ignores) is written last: a call
that finds a complete dataset with the same parameters returns at once; a partial one is regenerated.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import DataError
from ..util import atomic_write_bytes

DEMO_CLASSES: list[str] = ["circle", "cross", "crescent", "square", "star", "triangle"]
"""The demo's class names: one shape category each (colour and texture never predict the class)."""

MANIFEST_NAME = ".backbone-zoo-demo.json"
"""The manifest file inside ``root``; written last, so its presence marks a complete dataset."""

_VERSION = 1  # bump when the drawing changes: old datasets are then regenerated
_SUPERSAMPLE = 3  # shapes are drawn at this multiple of ``size`` and reduced (anti-aliasing)
_PNG_OPTIONS: dict[str, Any] = {"format": "PNG", "compress_level": 6, "optimize": False}
_IMAGE_RE = re.compile(r"^\d+\.png$")
_TMP_RE = re.compile(r"^\..*\.tmp$")

Polygon = tuple[np.ndarray, int]  # (N×2 vertices in unit coordinates, fill 255 = add / 0 = cut out)


# ---------------------------------------------------------------------------------------------- shapes
def _regular(n: int, phase: float = 0.0, radius: float = 1.0) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(a), np.sin(a)], axis=1)


def _round(rng: np.random.Generator, radius: float = 1.0, centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A circle with a smooth, low-frequency wobble of its radius (vertex jitter would look jagged)."""
    a = 2 * np.pi * np.arange(96) / 96
    r = radius * (1 + sum(rng.uniform(0, 0.03) * np.cos(k * a + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)))
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1) + np.asarray(centre)


def _circle(rng: np.random.Generator) -> list[Polygon]:
    return [(_round(rng), 255)]


def _square(rng: np.random.Generator) -> list[Polygon]:
    return [(_regular(4, np.pi / 4) * 1.05, 255)]


def _triangle(rng: np.random.Generator) -> list[Polygon]:
    return [(_regular(3, -np.pi / 2) * 1.25, 255)]


def _star(rng: np.random.Generator) -> list[Polygon]:
    points = int(rng.integers(5, 7))
    inner = rng.uniform(0.38, 0.5)
    outer, inn = _regular(points, -np.pi / 2, 1.15), _regular(points, -np.pi / 2 + np.pi / points, inner)
    return [(np.stack([outer, inn], axis=1).reshape(-1, 2), 255)]


def _cross(rng: np.random.Generator) -> list[Polygon]:
    w = rng.uniform(0.28, 0.4)
    q = np.array([[w, 1], [w, w], [1, w], [1, -w], [w, -w], [w, -1],
                  [-w, -1], [-w, -w], [-1, -w], [-1, w], [-w, w], [-w, 1]], dtype=float)
    return [(q, 255)]


def _crescent(rng: np.random.Generator) -> list[Polygon]:
    shift, r = rng.uniform(0.4, 0.6), rng.uniform(0.8, 0.95)
    return [(_round(rng), 255), (_round(rng, r, (shift, -0.1)), 0)]


_SHAPES: dict[str, Callable[[np.random.Generator], list[Polygon]]] = {
    "circle": _circle, "cross": _cross, "crescent": _crescent,
    "square": _square, "star": _star, "triangle": _triangle,
}


def _blob(rng: np.random.Generator) -> list[Polygon]:
    """An irregular, roughly convex blob (clutter and occluders; like no class shape)."""
    n = int(rng.integers(7, 12))
    a = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(0.55, 1.0, n)
    return [(np.stack([r * np.cos(a), r * np.sin(a)], axis=1), 255)]


def _place(polys: list[Polygon], rng: np.random.Generator, centre: np.ndarray, radius: float,
           jitter: float) -> list[Polygon]:
    """Rotate, stretch mildly, jitter the vertices, scale to ``radius`` pixels and move to ``centre``."""
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    phi = rng.uniform(0, np.pi)
    axis = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    stretch = axis @ np.diag([rng.uniform(0.85, 1.15), 1.0]) @ axis.T
    m = radius * (stretch @ rot)
    return [((pts + (rng.normal(0, jitter, pts.shape) if len(pts) <= 24 else 0)) @ m.T + centre, fill)
            for pts, fill in polys]


def _mask(polys: list[Polygon], size: int) -> np.ndarray:
    """Anti-aliased ``size``×``size`` float mask in [0, 1] of polygons given in pixel coordinates."""
    big = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(big)
    for pts, fill in polys:
        draw.polygon([(float(x), float(y)) for x, y in pts * _SUPERSAMPLE], fill=fill)
    small = big.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


# -------------------------------------------------------------------------------------------- textures
def _interp_matrix(size: int, cells: int) -> np.ndarray:
    """``size × (cells+1)`` smoothstep interpolation weights: ``W @ A @ W.T`` is value noise."""
    t = (np.arange(size) + 0.5) / size * cells
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    f = f * f * (3 - 2 * f)
    w = np.zeros((size, cells + 1), dtype=np.float32)
    w[np.arange(size), i] = 1 - f
    w[np.arange(size), i + 1] = f
    return w


def _noise(rng: np.random.Generator, size: int, cells: tuple[int, ...], decay: float = 0.55) -> np.ndarray:
    """Fractal value noise (sum of octaves with ``cells`` grid cells), normalised to [0, 1]."""
    out = np.zeros((size, size), dtype=np.float32)
    amp = 1.0
    for c in cells:
        w = _interp_matrix(size, c)
        out += amp * (w @ rng.standard_normal((c + 1, c + 1)).astype(np.float32) @ w.T)
        amp *= decay
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random colour, mostly natural-ish (muted) with some saturated ones."""
    base = rng.uniform(0.05, 0.95, 3)
    grey = base.mean()
    sat = rng.uniform(0.2, 1.0)
    return (grey + sat * (base - grey)).astype(np.float32)


_BG_KINDS = np.array([0.25, 0.2, 0.25, 0.2, 0.1])  # P(noise, stripes, gradient, blotches, plain)
_FG_KINDS = np.array([0.15, 0.15, 0.15, 0.15, 0.4])


def _texture(rng: np.random.Generator, size: int, kinds: np.ndarray = _BG_KINDS) -> np.ndarray:
    """A random ``size×size×3`` texture in [0, 1]: noise, stripes, gradient, blotches or a plain colour."""
    c1, c2 = _colour(rng), _colour(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = int(rng.choice(len(kinds), p=kinds))
    if kind == 4:  # a plain colour, shaded slightly towards the other
        phi = rng.uniform(0, 2 * np.pi)
        t = rng.uniform(0.0, 0.35) * (0.5 + 0.5 * np.cos(2 * np.pi * 0.5 * (xx * np.cos(phi) + yy * np.sin(phi))))
        t = t + 0.08 * _noise(rng, size, (16,))
    elif kind == 0:  # smooth fractal noise
        t = _noise(rng, size, (2, 4, 8, 16))
    elif kind == 1:  # warped stripes
        phi, freq = rng.uniform(0, np.pi), rng.uniform(2, 7)
        warp = _noise(rng, size, (3,)) * rng.uniform(0.5, 2.0)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (freq * (xx * np.cos(phi) + yy * np.sin(phi)) + warp))
    elif kind == 2:  # linear gradient plus fine noise
        phi = rng.uniform(0, 2 * np.pi)
        g = xx * np.cos(phi) + yy * np.sin(phi)
        t = (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
        t = np.clip(0.8 * t + 0.2 * _noise(rng, size, (12, 24)), 0, 1)
    else:  # blotches: thresholded noise with soft edges
        n = _noise(rng, size, (int(rng.integers(4, 10)),))
        t = 1 / (1 + np.exp(-(n - rng.uniform(0.35, 0.65)) * 14))
    t = t[..., None]
    return c1 * (1 - t) + c2 * t


# --------------------------------------------------------------------------------------------- drawing
def _render(cls: str, rng: np.random.Generator, size: int) -> Image.Image:
    """Draw one image of class ``cls``."""
    img = _texture(rng, size)

    # clutter behind the shape: line segments and small blobs
    for _ in range(int(rng.integers(1, 5))):
        if rng.random() < 0.5:
            a, b = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
            width = float(rng.uniform(0.6, 2.5)) * size / 96
            d = b - a
            n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-6) * width
            polys: list[Polygon] = [(np.stack([a + n, b + n, b - n, a - n]), 255)]
        else:
            polys = _place(_blob(rng), rng, rng.uniform(0, size, 2), rng.uniform(0.06, 0.16) * size, 0.0)
        m = _mask(polys, size)[..., None]
        img = img * (1 - m) + _texture(rng, size) * m

    # the shape: its own texture, a minimum colour difference to what lies under it
    radius = rng.uniform(0.2, 0.36) * size
    centre = rng.uniform(0.5 * radius + 0.1 * size, size - 0.5 * radius - 0.1 * size, 2)
    shape = _mask(_place(_SHAPES[cls](rng), rng, centre, radius, 0.035), size)[..., None]
    fg = _texture(rng, size, _FG_KINDS)
    under = (img * shape).sum((0, 1)) / max(float(shape.sum()), 1e-6)
    over = (fg * shape).sum((0, 1)) / max(float(shape.sum()), 1e-6)
    gap = over - under
    dist = float(np.linalg.norm(gap))
    want = rng.uniform(0.22, 0.45)
    if dist < want:  # push the foreground's colours away from the background's (direction random if 0)
        direction = gap / dist if dist > 1e-3 else rng.normal(0, 1, 3).astype(np.float32)
        direction /= max(float(np.linalg.norm(direction)), 1e-6)
        fg = np.clip(fg + (want - dist) * direction, 0, 1)
    img = img * (1 - shape) + fg * shape

    # partial occlusion: a blob in front, near the shape's edge
    if rng.random() < 0.45:
        ang = rng.uniform(0, 2 * np.pi)
        where = centre + radius * rng.uniform(0.7, 1.2) * np.array([np.cos(ang), np.sin(ang)])
        m = _mask(_place(_blob(rng), rng, where, rng.uniform(0.25, 0.45) * radius, 0.0), size)[..., None]
        img = img * (1 - m) + _texture(rng, size) * m

    # illumination, blur, sensor noise, JPEG
    light = 0.75 + 0.45 * _noise(rng, size, (2, 3))
    img = np.clip(img * light[..., None], 0, 1)
    img = img + rng.normal(0, rng.uniform(0.0, 0.035), img.shape).astype(np.float32)
    pil = Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")
    blur = rng.uniform(0.0, 1.1) * size / 96
    if blur > 0.25:
        pil = pil.filter(ImageFilter.GaussianBlur(blur))
    if rng.random() < 0.7:
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(rng.integers(35, 90)))
        buf.seek(0)
        with Image.open(buf) as jpg:
            pil = jpg.convert("RGB")
    return pil


def render_demo_image(cls: str, index: int, *, size: int = 96, seed: int = 0) -> Image.Image:
    """The ``index``-th demo image of class ``cls`` as an RGB PIL image (what the dataset file holds)."""
    if cls not in _SHAPES:
        raise DataError(f"unknown demo class {cls!r}: choose one of {', '.join(DEMO_CLASSES)}")
    rng = np.random.default_rng([_VERSION, seed, DEMO_CLASSES.index(cls), index])
    return _render(cls, rng, size)


# ------------------------------------------------------------------------------------------ the folder
def _file_name(i: int, per_class: int) -> str:
    return f"{i:0{max(3, len(str(per_class - 1)))}d}.png"


def _params(per_class: int, size: int, seed: int) -> dict[str, Any]:
    return {"version": _VERSION, "classes": DEMO_CLASSES, "per_class": per_class, "size": size, "seed": seed}


def _is_complete(root: Path, params: dict[str, Any]) -> bool:
    """True when the manifest matches ``params`` and every listed file exists with its recorded size."""
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
        if manifest.get("params") != params:
            return False
        files = manifest["files"]
        if len(files) != len(DEMO_CLASSES) * params["per_class"]:
            return False
        return all((root / rel).stat().st_size == n for rel, n in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _clear_for_regeneration(root: Path) -> None:
    """Remove an old/partial demo's images and temp files; refuse to touch anything that isn't ours."""
    foreign: list[Path] = []
    for entry in root.iterdir():
        if entry.name == MANIFEST_NAME or _TMP_RE.match(entry.name):
            entry.unlink()
        elif entry.is_dir() and entry.name in DEMO_CLASSES:
            for f in entry.iterdir():
                if f.is_file() and (_IMAGE_RE.match(f.name) or _TMP_RE.match(f.name)):
                    f.unlink()
                else:
                    foreign.append(f)
        else:
            foreign.append(entry)
    if foreign:
        raise DataError(f"demo data folder {str(root)!r} holds files that are not part of the demo dataset "
                        f"(e.g. {str(foreign[0])!r}): pass an empty or new folder as the demo root")


def make_demo_dataset(root: str | os.PathLike, *, per_class: int = 60, size: int = 96, seed: int = 0,
                      progress: bool = True) -> Path:
    """Write the demo image folder ``root/<class>/<i>.png`` (idempotent; partial datasets regenerated)."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 2:
        raise DataError(f"make_demo_dataset: per_class must be an integer >= 2, got {per_class!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise DataError(f"make_demo_dataset: size must be an integer >= 16 pixels, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"make_demo_dataset: seed must be a non-negative integer, got {seed!r}")
    root = Path(root)
    params = _params(per_class, size, seed)
    if root.exists() and not root.is_dir():
        raise DataError(f"demo data root {str(root)!r} exists and is not a folder: pass a folder path")
    if _is_complete(root, params):
        return root
    root.mkdir(parents=True, exist_ok=True)
    _clear_for_regeneration(root)

    from tqdm.auto import tqdm

    files: dict[str, int] = {}
    with tqdm(total=len(DEMO_CLASSES) * per_class, desc="drawing demo images", unit="img",
              disable=not progress) as bar:
        for cls in DEMO_CLASSES:
            (root / cls).mkdir(exist_ok=True)
            for i in range(per_class):
                buf = io.BytesIO()
                render_demo_image(cls, i, size=size, seed=seed).save(buf, **_PNG_OPTIONS)
                rel = f"{cls}/{_file_name(i, per_class)}"
                atomic_write_bytes(root / rel, buf.getvalue(), sync=False)
                files[rel] = buf.tell()
                bar.update()
    manifest = {"params": params, "files": files}
    atomic_write_bytes(root / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return root
