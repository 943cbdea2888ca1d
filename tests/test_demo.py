"""The built-in demo: a deterministic generated dataset and the compare it drives (``make demo``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers_images import assert_png

from zoo_core import demo
from zoo_core.data import load_data
from zoo_core.data.demo import DEMO_CLASSES, make_demo_dataset


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def test_demo_dataset_is_deterministic_and_reads_as_an_image_folder(tmp_path: Path) -> None:
    a = make_demo_dataset(tmp_path / "a", per_class=3, size=48, seed=0, progress=False)
    b = make_demo_dataset(tmp_path / "b", per_class=3, size=48, seed=0, progress=False)
    c = make_demo_dataset(tmp_path / "c", per_class=3, size=48, seed=1, progress=False)
    assert _digest(a) == _digest(b) and len(_digest(a)) == 3 * len(DEMO_CLASSES)
    assert _digest(a) != _digest(c)
    split = load_data(a, val_fraction=0.34, progress=False)
    assert split.classes == sorted(DEMO_CLASSES)
    assert not split.problems and "(0 skipped)" in split.summary()  # the hidden manifest is not a "skip"


def test_demo_compares_one_backbone_per_plugin_and_marks_random_init(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    # the real demo's plugins and sizes, made tiny; offline, so every entry without weights that reach this
    # machine falls back to random init, efficientnet_lite0 runs pretrained, and the uncached VGG stays out
    monkeypatch.setattr(demo, "DEMO_BACKBONES", {"effnet_lite": "efficientnet_lite0", "timm": "timm/test_resnet",
                                                 "vgg": "vgg11"})
    monkeypatch.setattr(demo, "DEMO_SETTINGS", {"image_size": 32, "epochs_finetune": 1, "batch_size": 8})
    board = demo.run_demo(tmp_path / "out", per_class=4)
    labels = {e.label: e for e in board.entries}
    assert set(labels) == {f"{b} [{s}]" for b in ("efficientnet_lite0", "timm/test_resnet")
                           for s in ("feature-extraction", "auto")}
    # all trained by this run: the feature-extraction entries of the first compare call too (not "reused")
    assert all(e.status == "ok" for e in board.entries), board.entries
    assert {e.weights for e in board.entries if e.backbone == "efficientnet_lite0"} == {"pretrained"}
    assert {e.weights for e in board.entries if e.backbone != "efficientnet_lite0"} == {"RANDOM INIT"}
    out = tmp_path / "out"
    md = (out / "leaderboard.md").read_text()
    assert md.count("RANDOM INIT") >= 2 and md.count("| pretrained |") == 2
    rows = json.loads((out / "leaderboard.json").read_text())
    rows = rows["entries"] if isinstance(rows, dict) else rows
    assert len(rows) == 4
    for name in ("accuracy_vs_speed.png", "learning_curves.png"):
        assert_png(out / name)
    captured = capsys.readouterr()
    err, header = captured.err, board.table().splitlines()[0]
    assert board.table() in captured.out and captured.out.count(header) == 1 and header not in err  # once, stdout
    assert "RANDOM INIT" in err and "finished in" in err
    assert "leaving out vgg11 (its weights are not cached" in err
    assert "best pretrained: efficientnet_lite0 [" in err and "best random init: timm/test_resnet [" in err
    # a second run reuses every finished entry
    again = demo.run_demo(tmp_path / "out", per_class=4)
    assert {e.status for e in again.entries} == {"reused"}


def test_demo_uses_large_weights_only_when_cached(zoo_home) -> None:
    from torchvision.models import VGG11_Weights

    from zoo_core.backbones.weights import torch_hub_checkpoint

    assert "vgg11" in demo.ONLY_IF_CACHED and "vgg11" not in demo.demo_backbones()
    assert "efficientnet_lite0" in demo.demo_backbones() and "resnet18" in demo.demo_backbones()
    cached = torch_hub_checkpoint(VGG11_Weights.DEFAULT.url)
    assert str(cached).startswith(str(zoo_home.torch_home))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")  # only its presence is looked at; the weights loader would judge the content
    assert "vgg11" in demo.demo_backbones()


def test_the_demo_shows_real_transfer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skip_run_plots: None) -> None:
    # the demo's own image sizes and settings with half its images (feature extraction only): real ImageNet
    # features from the efficientnet-lite0 package against a random-init backbone, as `make demo` runs offline
    monkeypatch.setattr(demo, "DEMO_BACKBONES", {"effnet_lite": "efficientnet_lite0", "timm": "timm/test_resnet"})
    monkeypatch.setattr(demo, "DEMO_STRATEGIES", ("feature-extraction",))
    board = demo.run_demo(tmp_path / "out", per_class=demo.DEMO_DATA["per_class"] // 2)
    acc = {e.backbone: (e.val_acc, e.weights) for e in board.entries}
    assert acc["efficientnet_lite0"][1] == "pretrained" and acc["efficientnet_lite0"][0] >= 0.8, acc
    assert acc["timm/test_resnet"][1] == "RANDOM INIT" and acc["timm/test_resnet"][0] <= 0.35, acc
