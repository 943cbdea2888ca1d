"""Inference from a run: ``zoo predict`` labels the readable images and reports each unreadable one (a
decompression bomb, a corrupt or non-image file) as one line; an inconsistent checkpoint is one line too."""

from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from helpers_cli import one_line_error, run
from helpers_images import cut_scan_jpeg, make_folder, write_image
from PIL import Image

import zoo_core
from zoo_core import DataConfig, ZooError, inference
from zoo_core import data as zdata
from zoo_core.rundir import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("skip_run_plots")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-class feature-extraction run of timm/test_resnet at 32 px."""
    root = tmp_path_factory.mktemp("inf")
    data = make_folder(root / "data", num_classes=2, per_class=6)
    result = zoo_core.train("timm/test_resnet", data, weights=None, image_size=32, progress=False,
                            out_dir=root / "runs", run_name="r")
    return result.run_dir


def png_bomb(path: Path, side: int = 40_000) -> Path:
    """A 100-byte PNG whose header claims side × side pixels (1.6 billion): Pillow's bomb guard refuses it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit gray
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_predict_labels_good_files_and_reports_each_bad_one(run_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    good = write_image(tmp_path / "good.png", cls=0, index=50)
    bomb = png_bomb(tmp_path / "bomb.png")
    cut = cut_scan_jpeg(tmp_path / "cut.jpg")
    notes = tmp_path / "notes.jpg"
    notes.write_text("not an image")
    missing = tmp_path / "missing.png"
    good2 = write_image(tmp_path / "good2.png", cls=1, index=51)

    code, out, err = run(capsys, "predict", run_dir, good, bomb, cut, notes, missing, good2, "-k", "1")
    assert code == 2
    assert [line.split()[0] for line in out.splitlines()[2:]] == [str(good), str(good2)]  # good files still print
    errors = err.splitlines()
    assert len(errors) == 4 and all(e.startswith("zoo: error: cannot read image ") for e in errors)
    assert f"{bomb}: image too large" in errors[0] and "decompression bomb" in errors[0]
    assert f"{cut}: corrupt image" in errors[1]
    assert f"{notes}: not a readable image" in errors[2] and f"{missing}: file not found" in errors[3]
    assert "Traceback" not in err

    code, out, _ = run(capsys, "predict", run_dir, good, bomb, "--json")
    rows = json.loads(out)
    assert code == 2 and [r["image"] for r in rows] == [str(good), str(bomb)]
    assert len(rows[0]["top"]) == 2 and "error" not in rows[0]
    assert rows[1]["top"] == [] and "image too large" in rows[1]["error"]

    code, out, err = run(capsys, "predict", run_dir, bomb)
    assert code == 2 and out == "" and "image too large" in one_line_error(err)

    clf = zoo_core.load(run_dir)
    with pytest.raises(zdata.UnreadableImage, match=r"bomb\.png: image too large") as exc:
        clf.predict([good, bomb])
    assert isinstance(exc.value, zoo_core.DataError) and "\n" not in str(exc.value)


def _edit(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def edit(ck: dict[str, Any]) -> dict[str, Any]:
        ck = dict(ck)
        if value is KeyError:
            del ck[key]
        else:
            ck[key] = value(ck) if callable(value) else value
        return ck
    return edit


@pytest.mark.parametrize(("edit", "needle"), [
    (_edit("classes", lambda ck: [*ck["classes"], "extra"]), "lists 3 classes but its head 'fc' has 2 outputs"),
    (_edit("classes", "class0"), "has classes 'class0', not a non-empty list of names"),
    (_edit("classes", ["a", "a"]), "lists a class name twice"),
    (_edit("model", [1, 2, 3]), "has a 'model' of type list, not a state dict of tensors"),
    (_edit("model", lambda ck: dict(list(ck["model"].items())[1:])),  # the first key dropped
     "does not fit timm/test_resnet (weights"),
    (_edit("model", lambda ck: {**ck["model"], "extra.weight": torch.zeros(1)}), "unexpected keys: extra.weight"),
    (_edit("data_config", "bilinear"), "has a bad data_config (it is a str, not a dict)"),
    (_edit("data_config", lambda ck: {**ck["data_config"], "input_size": [3, 32]}), "input_size [3, 32] is not"),
    (_edit("data_config", lambda ck: {**ck["data_config"], "interpolation": "sideways"}),
     "bad data_config (Unknown interpolation 'sideways'"),
    (_edit("data_config", lambda ck: {**ck["data_config"], "std": [0.2, 0.0, 0.2]}), "do not fit 3 channels"),
    (_edit("backbone", "resnet19"), "was trained with backbone 'resnet19': Unknown backbone 'resnet19'."),
    (_edit("backbone", 7), "names backbone 7, not a backbone name"),
    (_edit("data_config", KeyError), "lacks 'data_config'"),
    (lambda ck: torch.zeros(3), "holds a Tensor, not a dict"),
])
def test_inconsistent_checkpoint_is_one_line_naming_file_and_fault(
        run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Callable[[Any], Any],
        needle: str) -> None:
    bad = tmp_path / "best.pt"
    save_checkpoint(bad, edit(load_checkpoint(run_dir / "best.pt")))
    image = write_image(tmp_path / "x.png", cls=0, index=1)
    code, out, err = run(capsys, "predict", bad, image)
    line = one_line_error(err)
    assert code == 2 and out == "" and f"checkpoint '{bad}'" in line and needle in line, line


def test_head_only_last_checkpoint_says_to_use_best(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_folder(tmp_path / "data", num_classes=2, per_class=6)
    r = zoo_core.train("timm/test_resnet", data, weights=None, image_size=32, epochs=1, progress=False,
                       out_dir=tmp_path / "runs", run_name="r")  # head-only epochs: last.pt holds the head
    image = write_image(tmp_path / "x.png", cls=0, index=1)
    code, _, err = run(capsys, "predict", r.run_dir / "last.pt", image)
    assert code == 2 and "holds only the head 'fc'" in one_line_error(err) and "best.pt" in err
    assert run(capsys, "predict", r.run_dir, image)[0] == 0  # the run directory itself uses best.pt


def test_predict_takes_folders_and_writes_a_csv(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    shots = tmp_path / "shots"
    second = write_image(shots / "b.png", cls=0, index=80)
    deep = write_image(shots / "nested" / "deeper" / "a.JPG", cls=1, index=81)
    first = write_image(shots / "a.png", cls=1, index=82)
    (shots / "notes.txt").write_text("not an image, not an image file name either")
    write_image(shots / ".hidden.png", cls=0, index=83)
    write_image(shots / ".cache" / "x.png", cls=0, index=84)
    broken = shots / "nested" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    empty = tmp_path / "empty"
    empty.mkdir()
    single = write_image(tmp_path / "single.png", cls=0, index=85)
    monkeypatch.setattr(inference, "PROGRESS_MIN", 3)
    out = tmp_path / "preds.csv"

    code, stdout, err = run(capsys, "predict", run_dir, shots, single, empty, "--csv", out, "-k", "2")
    assert code == 2 and stdout == ""  # the CSV replaces the table; one error line per unreadable entry
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    # a folder: its image files, recursive, in sorted order, hidden ones and other files left out
    assert [r["image"] for r in rows] == [str(p) for p in (first, second, broken, deep, single, empty)]
    assert list(rows[0]) == ["image", "label_1", "probability_1", "label_2", "probability_2", "error"]
    clf = zoo_core.load(run_dir)
    for r, img in zip(rows, (first, second, None, deep, single)):
        if img is None:
            assert r["label_1"] == "" and f"cannot read image {broken}: corrupt image" in r["error"]
            continue
        (l1, p1), (l2, p2) = ((t["label"], t["probability"]) for t in clf.predict([img], topk=2)[0]["top"])
        # the CSV keeps 6 decimals, and a batch of several images sums in another order than one image alone
        assert (r["label_1"], r["label_2"]) == (l1, l2) and float(r["probability_1"]) == pytest.approx(p1, abs=1e-5)
        assert r["error"] == "" and float(r["probability_1"]) >= float(r["probability_2"])
    assert "folder holds no image files" in rows[-1]["error"] and rows[-1]["label_1"] == ""
    errors = [line for line in err.splitlines() if line.startswith("zoo: error:")]
    assert len(errors) == 2 and "broken.png" in errors[0] and str(empty) in errors[1]
    assert "zoo predict: 4 image(s) labelled, 2 unreadable" in err and "img" in err  # the summary; the bar

    code, stdout, _ = run(capsys, "predict", run_dir, shots / "nested" / "deeper", "--json")
    assert code == 0 and [r["image"] for r in json.loads(stdout)] == [str(deep)]


# ---- load and preprocess, on a checkpoint written by hand -----------------------------------------------------------------------------------
ODD = DataConfig(input_size=(3, 32, 32), mean=(0.2, 0.3, 0.4), std=(0.5, 0.6, 0.7), crop_pct=0.8)  # resize 40


@pytest.fixture
def odd_run(tmp_path: Path) -> Path:
    """A run directory with a best.pt of a random resnet18 (3 classes) and the ODD preprocessing."""
    torch.manual_seed(0)
    model = zoo_core.create("resnet18", num_classes=3, weights=None)
    save_checkpoint(tmp_path / "run" / "best.pt", {
        "model": model.state_dict(), "classes": ["cat", "dog", "owl"], "backbone": "resnet18",
        "data_config": ODD.to_dict(), "num_classes": 3})
    return tmp_path / "run"


def test_load_and_predict_give_class_names_and_probabilities(odd_run: Path, tmp_path: Path) -> None:
    paths = [p for c in make_folder(tmp_path / "imgs", num_classes=2, per_class=2, size=48).iterdir()
             for p in sorted(c.iterdir())]
    clf = zoo_core.load(odd_run)
    assert clf.classes == ["cat", "dog", "owl"] and clf.data_config == ODD and not clf.training
    out = zoo_core.predict(odd_run, paths, topk=3)
    with torch.no_grad():
        probs = clf(clf.preprocess(paths)).softmax(1)
    for row, path, p in zip(out, paths, probs):
        ps = [t["probability"] for t in row["top"]]
        assert row["image"] == str(path) and sorted(t["label"] for t in row["top"]) == clf.classes
        assert sum(ps) == pytest.approx(1.0, abs=1e-5) and ps == sorted(ps, reverse=True)
        assert row["top"][0]["label"] == clf.classes[int(p.argmax())]
    assert [len(r["top"]) for r in clf.predict(paths, topk=10)] == [3] * len(paths)  # k capped at the class count


def test_preprocessing_is_the_data_config_of_the_run(odd_run: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)  # shorter side already at resize size 40
    Image.fromarray(rgb).save(tmp_path / "wide.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")  # mode L → RGB
    batch = zoo_core.load(odd_run).preprocess([tmp_path / "wide.png", tmp_path / "gray.png"])
    assert batch.shape == (2, *ODD.input_size) and batch.dtype == torch.float32
    mean, std = torch.tensor(ODD.mean)[:, None, None], torch.tensor(ODD.std)[:, None, None]
    crop = torch.from_numpy(rgb[4:36, 14:46]).permute(2, 0, 1).float()  # center crop 32×32 of 40×60
    assert torch.allclose(batch[0], (crop / 255 - mean) / std, atol=1e-5)
    gray = crop[:1].expand(3, -1, -1)
    assert torch.allclose(batch[1], (gray / 255 - mean) / std, atol=1e-5)


def test_load_rejects_folders_and_checkpoints_that_are_not_runs(tmp_path: Path) -> None:
    with pytest.raises(ZooError, match="no best.pt or last.pt"):
        zoo_core.load(tmp_path)
    save_checkpoint(tmp_path / "x.pt", {"model": {}})
    with pytest.raises(ZooError, match="lacks 'classes'"):
        zoo_core.load(tmp_path / "x.pt")
