"""Odd names and odd files: a ``$`` or a formula in a name, a JPEG cut mid-scan, float TIFFs with NaN/inf,
a FIFO among the images, an unwritable cache folder, warnings above the progress bar."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers_cli import run
from helpers_images import assert_png, make_folder
from helpers_toys import KnownAdapter, KnownFeatures, plugin_of
from PIL import Image

import zoo_core
from zoo_core import data as zdata
from zoo_core.cli.common import warnings_above_bars
from zoo_core.data.images import check_image, load_image
from zoo_core.outputs import plots
from zoo_core.util import csv_cell, csv_value

FAST = {"weights": None, "image_size": 32, "progress": False}
ODD = ["price_$5_$10", "=HYPERLINK(1)", "@cmd"]  # mathtext and formula starts


class DollarAdapter(KnownAdapter):
    family = "dollartoy"

    def names(self) -> list[str]:
        return ["cost_$1_$2"]

    def create(self, name: str, *, weights: str | None = None, num_classes: int = 1000) -> torch.nn.Module:
        return KnownFeatures("good", num_classes)


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_dollar_and_formula_names_plot_literally_and_csv_cells_are_neutralised(
        tmp_path: Path, add_plugin: Any, capsys: pytest.CaptureFixture[str]) -> None:
    add_plugin(plugin_of(DollarAdapter()), name="dollartoy")
    data = make_folder(tmp_path / "data", names=ODD, per_class=6)
    board = zoo_core.compare("cost_$1_$2", data, out_dir=tmp_path / "cmp", **FAST)
    (entry,) = board.entries
    assert entry.status == "ok", entry.error
    run_dir = tmp_path / "cmp" / "runs" / "cost_$1_$2-feature-extraction"
    for name in ("curves.png", "confusion.png", "top_losses.png"):
        assert_png(run_dir / name)
    for name in ("accuracy_vs_speed.png", "learning_curves.png"):
        assert_png(tmp_path / "cmp" / name)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["classes"] == sorted(ODD)  # the JSON keeps the exact names
    cells = [r["class"] for r in rows_of(run_dir / "per_class.csv")]
    assert sorted(cells) == sorted(["price_$5_$10", "'=HYPERLINK(1)", "'@cmd"])
    items = [r["item"] for r in rows_of(run_dir / "val_predictions.csv")]
    assert items and all(not i.startswith(("=", "@")) for i in items)
    assert {csv_value(i).split("/")[0] for i in items} <= set(ODD)
    # predict --csv: a file named like a formula
    img = tmp_path / "=1+1.png"
    img.write_bytes((data / ODD[0] / "img00.png").read_bytes())
    code, _, err = run(capsys, "predict", run_dir, img, "--csv", tmp_path / "p.csv")
    assert code == 0, err
    (row,) = rows_of(tmp_path / "p.csv")
    assert row["image"] == "'" + str(img) if str(img).startswith("=") else row["image"] == str(img)
    assert row["label_1"] in {csv_cell(c) for c in ODD}


def test_csv_cells() -> None:
    assert [csv_cell(v) for v in ("=1", "+a", "-b", "@c", "\tx", "ok", "-", "-0.5", "1e-3", 3, -2.5, None)] == [
        "'=1", "'+a", "'-b", "'@c", "'\tx", "ok", "-", "-0.5", "1e-3", 3, -2.5, None]
    assert [csv_value(csv_cell(v)) for v in ("=1", "@c", "ok", "-0.5")] == ["=1", "@c", "ok", "-0.5"]


def test_plots_draw_dollars_literally(tmp_path: Path) -> None:
    plots.confusion_matrix([[1, 0], [0, 1]], ["$a_", "b$^"], tmp_path / "c.png", title="$x_$y")
    plots.scatter([{"label": "cost_$1_$2", "tag": 1, "x": 1.0, "y": 0.5}], "x", "y", tmp_path / "s.png",
                  xlabel="$", ylabel="^_$", title="$$")
    assert_png(tmp_path / "c.png")
    assert_png(tmp_path / "s.png")


def cut_baseline_jpeg(path: Path) -> Path:
    """A baseline JPEG cut in the middle of its scan, with the end-of-image marker put back."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    sos = data.index(b"\xff\xda")
    path.write_bytes(data[: sos + (len(data) - sos) // 2] + b"\xff\xd9")
    return path


def test_a_baseline_jpeg_cut_mid_scan_is_skipped_and_counted(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", num_classes=2, per_class=6, ext="jpg")
    cut = cut_baseline_jpeg(root / "class0" / "cut.jpg")
    with Image.open(cut) as img:
        img.load()  # Pillow alone decodes it without a word
    assert "truncated or corrupt JPEG data" in check_image(cut)
    assert check_image(root / "class0" / "img00.jpg") is None
    split = zdata.load_data(root, progress=False)
    assert len(split.train) + len(split.val) == 12
    assert [os.path.basename(p) for p, _ in split.skipped] == ["cut.jpg"]


def float_tiff(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values.astype(np.float32), "F").save(path)
    return path


def test_float_tiffs_ignore_non_finite_values_or_are_skipped(tmp_path: Path) -> None:
    a = np.linspace(0, 5, 32 * 32).reshape(32, 32)
    a[0, 0], a[1, 1], a[2, 2] = np.inf, np.nan, -np.inf
    some = float_tiff(tmp_path / "some.tif", a)
    none = float_tiff(tmp_path / "none.tif", np.full((8, 8), np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw NumPy warnings
        gray = np.asarray(load_image(some))[..., 0]
        assert check_image(some) is None
        assert check_image(none) == "float image without a finite pixel value (every value is NaN or infinite)"
    assert gray[31, 31] == 255 and gray[0, 1] == 0 and gray[16, 0] in (127, 128)  # over the finite values
    assert (gray[0, 0], gray[1, 1], gray[2, 2]) == (255, 0, 0)  # +inf brightest, NaN and -inf darkest


def test_predict_skips_a_fifo_named_like_an_image(tmp_path: Path, data3: Path, toys: None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    result = zoo_core.train("rank_good", data3, out_dir=tmp_path, run_name="r", **FAST)
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(next((data3 / "class0").iterdir()).read_bytes())
    os.mkfifo(folder / "x.png")
    code, out, err = run(capsys, "predict", result.run_dir, folder, "--json")
    assert code == 0, err
    assert [Path(r["image"]).name for r in json.loads(out)] == ["a.png"]
    code, _, err = run(capsys, "predict", result.run_dir, folder / "x.png")
    assert code == 2 and "not a regular file" in err


def test_an_unwritable_cache_folder_runs_without_the_disk_cache_and_says_so(
        tmp_path: Path, data3: Path, toys: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    blocked = tmp_path / "cache-is-a-file"
    blocked.write_text("x")
    monkeypatch.setenv("BACKBONE_ZOO_CACHE", str(blocked))
    code, out, err = run(capsys, "train", "rank_good", "--data", data3, "--out-dir", tmp_path / "o", "--run-name",
                         "r", "--weights", "none", "--image-size", "32", "--json")
    assert code == 0, err
    assert "zoo: warning: cannot write the feature cache" in err and "without the disk cache" in err
    assert json.loads(out)["val_acc"] > 0.5 and blocked.read_text() == "x"
    board = zoo_core.compare("rank_good", data3, out_dir=tmp_path / "cmp", **FAST)  # pixels shared by default
    assert board.entries[0].status == "ok", board.entries[0].error


def test_warnings_are_written_through_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[str] = []
    monkeypatch.setattr("zoo_core.cli.common.tqdm.write", lambda msg, file=None: written.append(msg))
    with warnings_above_bars():
        logging.getLogger("zoo_core.cache.policy").warning("precision auto: %s; using %s", "bf16 drifted", "fp32")
        logging.getLogger("zoo_core.cache.policy").info("not shown")
    logging.getLogger("zoo_core.cache.policy").warning("after the command: not through tqdm")
    assert written == ["zoo: warning: precision auto: bf16 drifted; using fp32"]
