"""The built-in demo: a deterministic generated dataset and the compare it drives (``make demo``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from zoo_core import demo
from zoo_core.data import load_data
from zoo_core.demo_data import DEMO_CLASSES, make_demo_dataset


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
    # the real demo's backbones and sizes, made tiny; offline, so every entry falls back to random init
    monkeypatch.setattr(demo, "DEMO_BACKBONES", {"resnet": "resnet18", "timm": "timm/test_resnet"})
    monkeypatch.setattr(demo, "DEMO_SETTINGS", {"image_size": 32, "epochs_finetune": 1, "batch_size": 8})
    board = demo.run_demo(tmp_path / "out", per_class=4)
    labels = {e.label: e for e in board.entries}
    assert set(labels) == {f"{b} [{s}]" for b in ("resnet18", "timm/test_resnet")
                           for s in ("feature-extraction", "finetune")}
    # all trained by this run: the feature-extraction entries of the first compare call too (not "reused")
    assert all(e.status == "ok" and e.weights == "RANDOM INIT" for e in board.entries), board.entries
    out = tmp_path / "out"
    md = (out / "leaderboard.md").read_text()
    assert md.count("RANDOM INIT") >= 4
    rows = json.loads((out / "leaderboard.json").read_text())
    rows = rows["entries"] if isinstance(rows, dict) else rows
    assert len(rows) == 4
    for name in ("accuracy_vs_speed.png", "learning_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    err = capsys.readouterr().err
    assert "RANDOM INIT" in err and "finished in" in err
    # a second run reuses every finished entry
    again = demo.run_demo(tmp_path / "out", per_class=4)
    assert {e.status for e in again.entries} == {"reused"}
