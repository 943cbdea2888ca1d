"""Issue 7: the LR range test's suggestion is a learning rate worth using.

A short full fine-tune of a tiny LayerNorm ViT (random init) on a generated 4-class folder, at the
suggested LR, ends with a lower validation loss than the same run at 100× and at 1/100 of it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers_images import make_folder
from PIL import Image

import zoo_core
from zoo_core.training.lrfind import lr_find, suggest_lr

KW = dict(weights=None, image_size=32, num_workers=0, batch_size=16, precision="fp32", device="cpu",
          head_init="random")  # the classic range test: a new, random head (LP-FT: test_lpft.py)


@pytest.mark.parametrize("seed", [0, 1])
def test_suggested_lr_beats_100x_larger_and_smaller(tmp_path: Path, seed: int) -> None:
    data = make_folder(tmp_path / "data", num_classes=4, per_class=24, seed=seed)
    found = lr_find("timm/test_vit", data, strategy="full", num_steps=60, progress=False, out=tmp_path / "find",
                    seed=seed, **KW)
    assert 1e-7 < found.suggestion < 1.0
    assert (tmp_path / "find" / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(tmp_path / "find" / "lr_find.png") as img:
        img.verify()
    curve = json.loads((tmp_path / "find" / "lr_find.json").read_text())
    assert curve["suggestion"] == found.suggestion and curve["lrs"] == sorted(curve["lrs"])

    val_loss = {}
    for mult in (1.0, 100.0, 0.01):
        r = zoo_core.train("timm/test_vit", data, strategy="full", lr=found.suggestion * mult, epochs=6,
                           augment=False, early_stopping=None, seed=seed, out_dir=tmp_path / "runs",
                           run_name=f"x{mult:g}", progress=False, **KW)
        val_loss[mult] = r.history[-1]["val_loss"]
    assert val_loss[1.0] < val_loss[100.0] and val_loss[1.0] < val_loss[0.01], val_loss


def test_suggest_lr_picks_the_steepest_descent_before_the_minimum() -> None:
    lrs = [10 ** (-6 + 0.1 * i) for i in range(60)]  # 1e-6 … ~1
    # flat, then a descent steepest near 1e-3, a minimum near 1e-2, then divergence
    losses = [2.0 - 1.5 / (1 + math.exp(-(math.log10(lr) + 3) * 4)) + (max(0.0, math.log10(lr) + 2) ** 2) * 3
              for lr in lrs]
    s = suggest_lr(lrs, losses)
    assert 3e-4 <= s <= 2e-3
    assert suggest_lr([1e-3], [1.0]) == 1e-3  # too short a curve: its only LR
