"""See the mistakes: every run writes ``top_losses.png`` (the worst validation images with true / predicted /
probability, named in the PNG's metadata) and ``most_confused.csv`` (true → predicted pairs with counts),
both from the same numbers as ``val_predictions.csv``."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers_images import assert_png, make_folder
from PIL import Image
from torchvision.datasets import FakeData

import zoo_core
from zoo_core import data as zdata
from zoo_core.outputs import plots
from zoo_core.rundir import RunDir
from zoo_core.training import report


def noise_folder(root: Path, classes: int = 3, per_class: int = 10) -> Path:
    """Classes of pure noise: nothing to learn, so the validation images hold mistakes."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / f"c{c}" / f"n{i}.png")
    return root


def test_a_run_draws_the_worst_images_and_counts_the_confused_pairs(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []
    real = plots.top_losses
    monkeypatch.setattr(plots, "learning_curves", lambda *a, **k: None)
    monkeypatch.setattr(plots, "confusion_matrix", lambda *a, **k: None)
    monkeypatch.setattr(plots, "top_losses", lambda tiles, *a, **k: (drawn.append(tiles), real(tiles, *a, **k)))
    data = noise_folder(tmp_path / "noise", classes=4, per_class=10)  # 8 val images
    r = zoo_core.train("resnet18", data, weights=None, image_size=32, progress=False, out_dir=tmp_path / "runs",
                       run_name="noise")
    with open(r.run_dir / "val_predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    worst = sorted(rows, key=lambda row: -float(row["loss"]))[:report.TOP_LOSSES]
    png = r.run_dir / "top_losses.png"
    assert_png(png, min_size=(300, 300))
    with Image.open(png) as img:
        listing = img.info["Description"].splitlines()
    assert len(listing) == len(worst) == 8  # fewer validation images than TOP_LOSSES: all of them
    for line, row in zip(listing, worst):  # worst first, named by file, with true / predicted class
        assert line.split(": ", 1)[1].startswith(f"true {row['target']}, pred {row['pred']}")
    assert [line.split(". ", 1)[1].split(": ")[0] for line in listing] == [row["item"] for row in worst]
    (tiles,) = drawn  # the gallery shows the images themselves, read again from the data folder
    for tile, row in zip(tiles, worst):
        with Image.open(data / row["item"]) as original:
            assert np.array_equal(np.asarray(tile["load"]()), np.asarray(original.convert("RGB")))

    with open(r.run_dir / "most_confused.csv", newline="") as f:
        confused = list(csv.DictReader(f))
    expected = Counter((row["target"], row["pred"]) for row in rows if row["target"] != row["pred"])
    assert confused and {(c["true"], c["pred"]): int(c["count"]) for c in confused} == dict(expected)
    assert [int(c["count"]) for c in confused] == sorted((int(c["count"]) for c in confused), reverse=True)
    support = Counter(row["target"] for row in rows)
    assert all(float(c["share_of_true"]) == round(int(c["count"]) / support[c["true"]], 4) for c in confused)


def test_most_confused_sorts_by_count_and_a_run_without_mistakes_writes_the_header(tmp_path: Path) -> None:
    rows = [{"target": t, "pred": p} for t, p in [("cat", "dog"), ("cat", "dog"), ("cat", "cat"), ("dog", "cat"),
                                                  ("fox", "dog"), ("fox", "dog"), ("fox", "fox")]]
    assert report.most_confused(rows) == [
        {"true": "cat", "pred": "dog", "count": 2, "share_of_true": 0.6667},
        {"true": "fox", "pred": "dog", "count": 2, "share_of_true": 0.6667},
        {"true": "dog", "pred": "cat", "count": 1, "share_of_true": 1.0}]
    run = RunDir(tmp_path)
    run.write_table("most_confused.csv", report.most_confused(rows[2:3]), columns=["true", "pred", "count"])
    assert (tmp_path / "most_confused.csv").read_text().splitlines() == ["true,pred,count"]


def test_the_gallery_of_a_dataset_object_uses_its_items_and_survives_a_vanished_file(tmp_path: Path) -> None:
    split = zdata.load_data(FakeData(size=12, image_size=(3, 24, 24), num_classes=2, random_offset=3),
                            val_fraction=0.5, progress=False)
    rows = [{"index": i, "item": zdata.item_name(split.val, i), "target": "0", "pred": "1", "p_pred": 0.9,
             "p_target": 0.1, "loss": float(i)} for i in range(len(split.val))]
    n = len(split.val)
    tiles = report.worst_images(split.val, rows, k=4)  # the highest losses: the last items here
    assert [t["index"] for t in tiles] == [n - 1, n - 2, n - 3, n - 4] and tiles[0]["item"].startswith("FakeData[")
    assert np.array_equal(np.asarray(tiles[0]["load"]()), np.asarray(split.val[n - 1][0]))

    files = make_folder(tmp_path / "f", num_classes=2, per_class=3)
    fsplit = zdata.load_data(files, val_fraction=0.34, progress=False)
    frows = [{"index": i, "item": zdata.item_name(fsplit.val, i), "target": "class0", "pred": "class1",
              "p_pred": 0.8, "p_target": 0.2, "loss": 1.0 + i} for i in range(len(fsplit.val))]
    (files / frows[-1]["item"]).unlink()  # the worst image is gone since the scan
    tiles = report.worst_images(fsplit.val, frows)
    assert tiles[0]["load"]() is None and all(t["load"]() is not None for t in tiles[1:])
    plots.top_losses(tiles, tmp_path / "g.png", "gallery")  # a missing image is a tile that says so
    with Image.open(tmp_path / "g.png") as img:
        assert img.info["Description"].startswith(f"1. {frows[-1]['item']}: true class0, pred class1")
    plots.top_losses([], tmp_path / "empty.png")
    assert_png(tmp_path / "empty.png")


@pytest.mark.parametrize("kw", [{}, {"strategy": "finetune", "epochs": 1}], ids=["cached-head-fit", "end-to-end"])
def test_every_run_writes_its_per_image_validation_predictions(tmp_path: Path, kw: dict, skip_run_plots) -> None:
    data = make_folder(tmp_path / "data", num_classes=3, per_class=8)
    result = zoo_core.train("resnet18", data, out_dir=str(tmp_path / "runs"), weights=None, image_size=32,
                            batch_size=8, progress=False, **kw)
    rows = list(csv.DictReader((result.run_dir / "val_predictions.csv").open()))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert len(rows) == sum(map(sum, summary["confusion_matrix"])) == 6
    assert all((data / r["item"]).is_file() and r["item"].split(os.sep)[0] == r["target"] for r in rows)
    assert len({r["item"] for r in rows}) == len(rows)
    for r in rows:
        assert 0 < float(r["p_target"]) <= float(r["p_pred"]) + 1e-6 <= 1 + 1e-6
        assert float(r["loss"]) == pytest.approx(-math.log(float(r["p_target"])), rel=1e-4, abs=1e-5)
        assert int(r["correct"]) == (r["pred"] == r["target"])
    assert sum(int(r["correct"]) for r in rows) / len(rows) == pytest.approx(result.metrics["val_acc"], abs=1e-5)
    assert sum(float(r["loss"]) for r in rows) / len(rows) == pytest.approx(result.metrics["val_loss"], rel=1e-3, abs=2e-5)
