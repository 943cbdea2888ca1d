"""The LR range test (zoo_core.training.lrfind): its outputs, its suggestion rule, and whether the suggestion is worth
using (a short fine-tune at the suggested LR beats the same run at 100x and at 1/100 of it).

Tiny LayerNorm ViT (``timm/test_vit``, random init) at 32 px on generated folders; no BatchNorm, so the
validation loss of a few-epoch run is not dominated by running statistics that have not settled yet.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers_images import assert_png, make_folder

import zoo_core
from zoo_core.errors import TrainingError
from zoo_core.outputs import plots
from zoo_core.training.lrfind import lr_find, suggest_lr

KW = dict(weights=None, image_size=32, num_workers=0, batch_size=16, precision="fp32", device="cpu",
          head_init="random")  # the classic range test: a new, random head (LP-FT: test_lpft.py)


@pytest.fixture(scope="module")
def data4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes x 40 images of 32 px (128 train / 32 val)."""
    return make_folder(tmp_path_factory.mktemp("lrfind4"), num_classes=4, per_class=40, size=32)


def curve(fn, lo: float = -7.0, hi: float = 0.0, n: int = 80) -> tuple[list[float], list[float]]:
    lrs = [10 ** (lo + (hi - lo) * i / (n - 1)) for i in range(n)]
    return lrs, [fn(math.log10(lr)) for lr in lrs]


def descent(x: float, centre: float = -3.0, minimum: float = -2.0) -> float:
    """Flat, a sigmoid descent steepest at ``centre``, a minimum near ``minimum``, then divergence."""
    return 2.0 - 1.5 / (1 + math.exp(-(x - centre) * 4)) + 3 * max(0.0, x - minimum) ** 2


# ------------------------------------------------------------------------------------- suggestion rule


def test_suggestion_is_the_steepest_descent_before_the_minimum() -> None:
    lrs, losses = curve(descent)
    assert 5e-4 <= suggest_lr(lrs, losses) <= 2e-3


def test_suggestion_is_capped_below_the_minimum() -> None:
    # steepest at 1e-2 but the minimum soon after at ~1.5e-2: stay a third of the way below the minimum
    lrs, losses = curve(lambda x: descent(x, centre=-2.0, minimum=-1.8))
    i_min = min(range(len(losses)), key=losses.__getitem__)
    assert suggest_lr(lrs, losses) <= lrs[i_min] / 3 * (1 + 1e-9)


def test_noisy_start_of_the_curve_is_ignored() -> None:
    """The smoothed loss of the first few batches is noise: a big drop there is not the steepest descent."""
    lrs, losses = curve(descent)
    losses[0], losses[1], losses[2] = 4.0, 2.6, 2.1  # warm-up of the running average
    assert 5e-4 <= suggest_lr(lrs, losses) <= 2e-3


def test_one_noisy_step_does_not_decide() -> None:
    lrs, losses = curve(descent)
    spike = 30  # ~1e-4.3, on the flat part: a single step dips sharply, then comes back
    losses[spike] -= 0.3
    assert 5e-4 <= suggest_lr(lrs, losses) <= 2e-3


def test_degenerate_curves() -> None:
    assert suggest_lr([1e-3], [1.0]) == 1e-3
    assert suggest_lr([], []) == 1e-3
    lrs, losses = curve(lambda x: 1.0 + 0.1 * (x + 7))  # rises from the start: the smallest LRs
    assert suggest_lr(lrs, losses) <= lrs[len(lrs) // 10]


# ------------------------------------------------------------------------------------------ lr_find


def test_range_test_writes_curve_plot_and_suggestion(tmp_path: Path, data4: Path) -> None:
    found = lr_find("timm/test_vit", data4, strategy="full", num_steps=30, start_lr=1e-6, end_lr=10.0,
                    progress=False, out=tmp_path / "find", **KW)
    assert 1 < len(found.lrs) <= 30 and len(found.losses) == len(found.lrs)
    assert found.lrs == sorted(found.lrs) and found.lrs[0] == pytest.approx(1e-6)
    assert found.lrs[0] <= found.suggestion <= found.lrs[-1]
    if len(found.lrs) < 30:  # stopped early: the loss diverged
        assert not math.isfinite(found.losses[-1]) or found.losses[-1] > 4 * min(found.losses)
    png = tmp_path / "find" / "lr_find.png"
    assert_png(png, min_size=(200, 100))
    saved = json.loads((tmp_path / "find" / "lr_find.json").read_text())
    assert saved["suggestion"] == found.suggestion and saved["lrs"] == found.lrs
    assert saved["plot"] == str(png) and found.plot == png
    assert not list((tmp_path / "find").glob("*.tmp"))  # written atomically, nothing left behind


def test_suggestion_beats_100x_larger_and_smaller(tmp_path: Path, data4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 3 on the 4-class folder: three full fine-tunes, at the suggestion, 100x it and 1/100 of it."""
    monkeypatch.setattr(plots, "learning_curves", lambda *a, **k: None)  # ~1.5 s a run, not under test
    monkeypatch.setattr(plots, "confusion_matrix", lambda *a, **k: None)
    seed = 3
    found = lr_find("timm/test_vit", data4, strategy="full", num_steps=60, seed=seed, progress=False, **KW)
    val_loss = {}
    for mult in (1.0, 100.0, 0.01):
        try:
            run = zoo_core.train("timm/test_vit", data4, strategy="full", lr=found.suggestion * mult, epochs=3,
                                 seed=seed, early_stopping=None, out_dir=tmp_path / "runs", run_name=f"x{mult:g}",
                                 progress=False, **KW)
            val_loss[mult] = run.metrics["val_loss"]  # the best epoch's
        except TrainingError:  # diverged: as bad as it gets
            val_loss[mult] = math.inf
    assert val_loss[1.0] < val_loss[100.0] and val_loss[1.0] < val_loss[0.01], (found.suggestion, val_loss)
    assert val_loss[1.0] < 0.9 * min(val_loss[100.0], val_loss[0.01]), val_loss  # by a clear margin


@pytest.mark.parametrize("seed", [0, 1])
def test_suggested_lr_beats_100x_larger_and_smaller(tmp_path: Path, seed: int) -> None:
    data = make_folder(tmp_path / "data", num_classes=4, per_class=24, seed=seed)
    found = lr_find("timm/test_vit", data, strategy="full", num_steps=60, progress=False, out=tmp_path / "find",
                    seed=seed, **KW)
    assert 1e-7 < found.suggestion < 1.0
    assert_png(tmp_path / "find" / "lr_find.png")
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
