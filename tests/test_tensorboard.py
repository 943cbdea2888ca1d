"""``--log tensorboard``: the event files hold the epoch scalars, the LR schedule at every step, the
confusion-matrix image and the hparams; ``compare`` logs one run per entry under one folder; it is off by
default, and without the tensorboard package it is a one-line error before any work."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers_cli import one_line_error, run
from helpers_toys import FcHeadAdapter, plugin_of
from PIL import Image
from torch import nn

import zoo_core
from zoo_core import strategies

pytestmark = pytest.mark.usefixtures("skip_run_plots")
FAST = {"weights": None, "image_size": 32, "progress": False}
DATA3_PER_CLASS = 6


def events(log_dir: Path) -> Any:
    """An EventAccumulator over ``log_dir`` with everything loaded."""
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: Any, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_event_files_hold_scalars_lr_schedule_confusion_matrix_and_hparams(data3: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    r = zoo_core.train("resnet18", data3, strategy="finetune", epochs=2, max_steps=2, batch_size=4, lr=1e-3,
                       out_dir=tmp_path, run_name="ft", log="tensorboard", **FAST)
    log_dir = r.run_dir / "tensorboard"
    assert json.loads((r.run_dir / "summary.json").read_text())["tensorboard"] == str(log_dir)
    acc = events(log_dir)
    tags = acc.Tags()
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "train/lr", "lr/head", "lr/layer4",
            "hparam/val_accuracy", "hparam/val_loss"} <= set(tags["scalars"])
    assert "val/top5" not in tags["scalars"]  # 3 classes
    history = [json.loads(line) for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [s for s, _ in scalars(acc, "val/loss")] == [1, 2]
    assert [v for _, v in scalars(acc, "val/loss")] == pytest.approx([h["val_loss"] for h in history], rel=1e-6)
    # the schedule at every optimizer step: warm-up then cosine, the stage below the head at its own LR
    lr_at = strategies.warmup_cosine(4, 1)
    assert scalars(acc, "lr/head") == [(s, pytest.approx(1e-3 * lr_at(s), rel=1e-5)) for s in range(4)]
    layer4 = dict(scalars(acc, "lr/layer4"))
    assert layer4[3] == pytest.approx(1e-3 * 0.1 * lr_at(3), rel=1e-5)
    assert scalars(acc, "hparam/val_accuracy") == [(r.best_epoch, pytest.approx(r.metrics["val_acc"]))]
    (image,) = acc.Images("val/confusion_matrix")
    with Image.open(io.BytesIO(image.encoded_image_string)) as img:
        assert img.format == "PNG" and min(img.size) > 100 and image.step == r.best_epoch
    hp = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hp)
    start = hp["_hparams_/session_start_info"]
    assert b"resnet18" in start and b"finetune" in start and b"backbone" in start


def test_the_head_fit_logs_too_and_log_dir_collects_runs(data3: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    r = zoo_core.train("resnet18", data3, out_dir=tmp_path / "runs", run_name="fx", log="tensorboard",
                       log_dir=str(tmp_path / "tb"), **FAST)
    assert not (r.run_dir / "tensorboard").exists()
    acc = events(tmp_path / "tb" / "fx")
    assert scalars(acc, "val/accuracy") == [(1, pytest.approx(r.metrics["val_acc"]))]
    assert not [t for t in acc.Tags()["scalars"] if t.startswith("lr/")]  # L-BFGS has no LR schedule
    off = zoo_core.train("resnet18", data3, out_dir=tmp_path / "runs", run_name="off", **FAST)  # off by default
    assert not (off.run_dir / "tensorboard").exists()
    assert json.loads((off.run_dir / "summary.json").read_text())["tensorboard"] is None


class Tiny(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: Any) -> Any:
        return self.fc(self.stem(x))


class TinyAdapter(FcHeadAdapter):
    family = "tbtoy"

    def names(self) -> list[str]:
        return ["tb_toy_a", "tb_toy_b"]

    def create(self, name: str, *, weights: str | None = None, num_classes: int = 1000) -> nn.Module:
        return Tiny(num_classes)


def test_compare_logs_one_run_per_entry_under_one_folder(data3: Path, tmp_path: Path, add_plugin: Any) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    add_plugin(plugin_of(TinyAdapter()), name="tbtoy")
    board = zoo_core.compare(["tb_toy_a", "tb_toy_b"], data3, out_dir=tmp_path / "cmp", log="tensorboard",
                             epochs=1, **FAST)
    assert [e.status for e in board.entries] == ["ok", "ok"]
    runs = sorted(p.name for p in (tmp_path / "cmp" / "tensorboard").iterdir())
    assert runs == ["tb_toy_a-feature-extraction", "tb_toy_b-feature-extraction"]
    for name in runs:
        assert scalars(events(tmp_path / "cmp" / "tensorboard" / name), "val/loss")[0][0] == 1
    again = zoo_core.compare(["tb_toy_a"], data3, out_dir=tmp_path / "cmp", epochs=1, **FAST)  # logging is
    assert again.entries[0].status == "reused"  # no part of what a finished entry is: it is reused


def test_bad_log_options_and_a_missing_tensorboard_fail_in_one_line_before_any_work(
        data3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    code, _, err = run(capsys, "train", "resnet18", "--data", data3, "--out-dir", out, "--log", "wandb")
    assert code == 2 and "--log must be one of tensorboard, or none, got 'wandb'" in one_line_error(err)
    code, _, err = run(capsys, "train", "resnet18", "--data", data3, "--out-dir", out, "--log-dir", tmp_path)
    assert code == 2 and "add --log tensorboard" in one_line_error(err)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    code, _, err = run(capsys, "train", "resnet18", "--data", data3, "--out-dir", out, "--log", "tensorboard")
    assert code == 2 and one_line_error(err).endswith("needs the tensorboard package: pip install tensorboard")
    assert not out.exists()
