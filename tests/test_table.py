"""Labels from a table (zoo_core.data.table) and the test split (zoo_core.data.load)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from tests.helpers_images import make_folder
from zoo_core.data import load_data
from zoo_core.errors import DataError


def _write(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def _rows_of(root: Path) -> list[list[str]]:
    return [[p.relative_to(root).as_posix(), p.parent.name] for p in sorted(root.glob("*/*.png"))]


def test_csv_loads_the_same_split_as_the_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", num_classes=3, per_class=8)
    rows = _rows_of(root)
    extra = [["nowhere.png", "class0"], [rows[0][0], "class1"], [rows[1][0], ""], [rows[2][0], "class0"]]
    # rows[0] listed with two labels (both copies skipped): drop its image from the folder too
    table = load_data(_write(root / "labels.csv", [["image", "label"]] + rows + extra), progress=False)
    (root / rows[0][0]).unlink()
    folder = load_data(root, progress=False)
    assert table.classes == folder.classes
    assert table.train.samples == folder.train.samples and table.val.samples == folder.val.samples
    reasons = " | ".join(r for _, r in table.skipped)
    assert "row 26 of labels.csv" in reasons and "nowhere.png" in " ".join(p for p, _ in table.skipped)
    assert "different labels" in reasons and "empty label" in reasons and "listed twice" in reasons


def test_split_column_and_relabelling(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", num_classes=2, per_class=6)
    rows = _rows_of(root)
    parts = ["train", "train", "val", "test"] * 3
    table = [["file", "category", "split"]] + [r + [p] for r, p in zip(rows, parts)]
    split = load_data(_write(tmp_path / "t.tsv", table, "\t"), images=root, progress=False)
    assert (len(split.train), len(split.val), len(split.test)) == (6, 3, 3)
    assert split.test_fingerprint and "3 test" in split.summary()
    table[1][1] = "class1" if table[1][1] == "class0" else "class0"
    relabelled = load_data(_write(tmp_path / "t.tsv", table, "\t"), images=root, progress=False)
    assert relabelled.fingerprint != split.fingerprint
    table[4][1] = "class1" if table[4][1] == "class0" else "class0"  # a test row: train/val fingerprint kept
    retested = load_data(_write(tmp_path / "t.tsv", table, "\t"), images=root, progress=False)
    assert retested.fingerprint == relabelled.fingerprint and retested.test_fingerprint != split.test_fingerprint


def test_ambiguous_columns_and_unknown_test_class(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", num_classes=2, per_class=4)
    rows = _rows_of(root)
    with pytest.raises(DataError, match="--image-col and --label-col"):
        load_data(_write(root / "a.csv", [["a", "b", "c"]] + [r + ["x"] for r in rows]), progress=False)
    split = load_data(_write(root / "b.csv", [["a", "b", "c"]] + [r + ["x"] for r in rows]), image_col="a",
                      label_col="b", progress=False)
    assert split.classes == ["class0", "class1"]
    with pytest.raises(DataError, match="row 2 of c.csv: test class 'zebra'"):
        load_data(root / "b.csv", image_col="a", label_col="b", test=_write(root / "c.csv",
                  [["a", "b"], [rows[0][0], "zebra"]]), progress=False)


def test_presplit_folder_reads_root_test(tmp_path: Path) -> None:
    root = tmp_path / "d"
    make_folder(root / "train", num_classes=2, per_class=6)
    make_folder(root / "val", num_classes=2, per_class=2)
    make_folder(root / "test", num_classes=2, per_class=3)
    split = load_data(root, progress=False)
    assert len(split.test) == 6 and split.test.classes == split.classes
    make_folder(root / "test", counts={"emu": 1})
    with pytest.raises(DataError, match=r"Test class 'emu'.*test[/\\]emu"):
        load_data(root, progress=False)
    shutil.rmtree(root / "test")
    assert load_data(root, progress=False).fingerprint == split.fingerprint  # test never in the train/val one


def test_dataframe_like_the_csv(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    root = make_folder(tmp_path / "d", num_classes=2, per_class=6)
    rows = _rows_of(root)
    frame = pandas.DataFrame([[str(root / p), c] for p, c in rows], columns=["path", "label"])
    from_csv = load_data(_write(root / "l.csv", [["path", "label"]] + rows), progress=False)
    from_frame = load_data(frame, progress=False)
    assert from_frame.train.samples == from_csv.train.samples and from_frame.classes == from_csv.classes
