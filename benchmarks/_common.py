"""What the benchmark scripts share: the repository on ``sys.path`` (so a script runs from a checkout without an
install), generated image folders, and the command-line bits (parser, common options, the ``--out`` JSON)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_MARKER = ".bench-params.json"  # marks a complete generated folder (hidden: loaders ignore it)
_HELP = {
    "images": "images per measurement",
    "batch_size": "batch size",
    "repeats": "interleaved measurements per row; the best is kept",
    "seed": "random seed",
}


def parser(doc: str | None, **defaults: int) -> argparse.ArgumentParser:
    """An argument parser described by the first line of ``doc``, with the common options given a default here:
    ``images``, ``batch_size``, ``repeats``, ``seed`` (integers), e.g. ``parser(__doc__, repeats=3)``."""
    ap = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    for name, default in defaults.items():
        if name not in _HELP:
            raise ValueError(f"benchmarks/_common.parser: unknown common option {name!r} (one of {', '.join(_HELP)})")
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=default, help=f"{_HELP[name]} (default {default})")
    return ap


def add_out(ap: argparse.ArgumentParser) -> None:
    """``--out FILE``: where :func:`write_json` puts every number."""
    ap.add_argument("--out", type=Path, default=None, help="write every number to this JSON file")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _complete(root: Path, params: dict[str, Any]) -> bool:
    marker = root / _MARKER
    return marker.is_file() and json.loads(marker.read_text()) == params


def _mark(root: Path, params: dict[str, Any]) -> None:
    tmp = root / (_MARKER + ".tmp")
    tmp.write_text(json.dumps(params))
    os.replace(tmp, root / _MARKER)


def demo_folder(root: Path, *, images: int, size: int, render_size: int, seed: int) -> Path:
    """``root/<class>/<i>.png``: the demo's shapes drawn at ``render_size``, resized to ``size`` px, about
    ``images`` in all; a complete folder made with the same arguments is reused."""
    import shutil

    from PIL import Image

    from zoo_core.data.demo import DEMO_CLASSES, render_demo_image

    per_class = max(2, images // len(DEMO_CLASSES))
    params = {"per_class": per_class, "size": size, "render_size": min(render_size, size), "seed": seed, "v": 1}
    if _complete(root, params):
        return root
    if root.exists():
        shutil.rmtree(root)
    t = time.perf_counter()
    for cls in DEMO_CLASSES:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = render_demo_image(cls, i, size=params["render_size"], seed=seed)
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BICUBIC)
            tmp = root / cls / f".{i:05d}.png.tmp"
            img.save(tmp, format="PNG")
            os.replace(tmp, root / cls / f"{i:05d}.png")
    _mark(root, params)
    print(f"generated {per_class * len(DEMO_CLASSES)} PNG images ({size}px) in {root} "
          f"({time.perf_counter() - t:.1f}s)", file=sys.stderr, flush=True)
    return root


def demo_jpegs(folder: Path, count: int, *, size: tuple[int, int] = (500, 375), seed: int = 3) -> list[Path]:
    """``count`` demo photos as ``folder/<i>.jpg`` (``size`` px, JPEG quality 90: what a typical folder holds)."""
    from zoo_core.data.demo import DEMO_CLASSES, render_demo_image

    files = []
    for i in range(count):
        img = render_demo_image(DEMO_CLASSES[i % len(DEMO_CLASSES)], i, size=max(size), seed=seed).resize(size)
        files.append(folder / f"{i}.jpg")
        img.save(files[-1], quality=90)
    return files


def digits_folder(root: Path, size: int = 64) -> Path:
    """scikit-learn's handwritten digits as ``root/<digit>/<i>.png`` (``size`` px RGB); reused when complete."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    params = {"size": size, "images": len(digits.target)}
    if _complete(root, params):
        return root
    for i, (img, y) in enumerate(zip(digits.images, digits.target)):
        (root / str(y)).mkdir(parents=True, exist_ok=True)
        pixels = Image.fromarray((img / 16 * 255).astype(np.uint8))
        pixels.resize((size, size), Image.Resampling.BICUBIC).convert("RGB").save(root / str(y) / f"{i:04d}.png")
    _mark(root, params)
    return root
