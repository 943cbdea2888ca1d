"""Labels from a table → a :class:`~.split.DataSplit`: a CSV/TSV file (stdlib ``csv``), a parquet file or a
pandas DataFrame (pandas imported only for parquet).

* **Columns**: an image column (a path, or a file name without extension, e.g. Kaggle's ``image_id``) and a
  label column, found by name (:data:`IMAGE_COLUMNS`, :data:`LABEL_COLUMNS`, any case) or, in a table of
  exactly two such columns besides ``split``, by position; otherwise ``image_col``/``label_col`` name them.
* **Paths** are relative to ``images`` when given, else to the table's folder (the working directory for a
  DataFrame); absolute paths are used as they are.
* **An optional ``split`` column** (``train``, ``val``/``valid``/``validation``, ``test``) places each row;
  without ``val`` rows, train rows are split by :func:`~.split.stratified_split` like a folder.
* **Bad rows** are skipped and listed in ``skipped`` as ``(path or value, "row N of <table>: reason")``:
  an empty path or label, a missing or unusable image (:func:`~.images.check_image`), an unknown split, a
  path listed twice with different labels (every copy skipped) or twice with the same label (the copy).

Classes are the train labels, sorted (numerically when every label is an integer). A val or test label unknown
to training is a :class:`DataError` naming the row. The fingerprint hashes each kept row's split, path,
size, content hash and label, so relabelling one row changes it; the test rows have a fingerprint of their
own (:attr:`DataSplit.test_fingerprint`) and never change the train/val one.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import DataError
from .folders import run_checks
from .images import IMAGE_EXTENSIONS
from .sources import ImageFiles
from .split import DataSplit, fingerprint, stratified_split

TABLE_EXTENSIONS = (".csv", ".tsv", ".parquet")
"""File extensions read as a labels table."""

IMAGE_COLUMNS = ("image", "image_id", "image_path", "image_name", "path", "filepath", "file", "filename",
                 "file_name", "fname", "img", "id")
"""Column names taken as the image column (first match, any case)."""

LABEL_COLUMNS = ("label", "labels", "class", "class_name", "category", "target", "y", "diagnosis")
"""Column names taken as the label column (first match, any case)."""

SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
"""Values of the ``split`` column (any case) and the split each names."""

Row = tuple[int, str, str, str]  # (row number, path, label, split)


def is_table(data: Any) -> bool:
    """Whether ``data`` is a labels table: a DataFrame-like object, or a path ending in a table extension."""
    if hasattr(data, "columns") and hasattr(data, "to_dict"):
        return True
    return isinstance(data, (str, os.PathLike)) and os.fspath(data).lower().endswith(TABLE_EXTENSIONS)


def _read(data: Any) -> tuple[list[str], list[dict[str, Any]], str, Path, int]:
    """``(columns, records, name, folder, number of the first data row)`` of a table file or DataFrame."""
    if hasattr(data, "columns") and hasattr(data, "to_dict"):
        return [str(c) for c in data.columns], data.to_dict("records"), "the DataFrame", Path.cwd(), 0
    path = Path(data).expanduser()
    if not path.is_file():
        raise DataError(f"Labels table not found: {path}")
    if path.suffix.lower() == ".parquet":
        try:
            import pandas
        except ImportError:
            raise DataError(f"Reading {path} needs pandas and pyarrow (pip install pandas pyarrow); "
                            "or save the table as CSV.") from None
        frame = pandas.read_parquet(path)
        return [str(c) for c in frame.columns], frame.to_dict("records"), path.name, path.resolve().parent, 0
    with open(path, newline="", encoding="utf-8-sig") as f:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        reader = csv.DictReader(f, delimiter=delimiter)
        records = list(reader)
        columns = list(reader.fieldnames or [])
    if not columns:
        raise DataError(f"{path} is empty: expected a header row naming an image column and a label column")
    return columns, records, path.name, path.resolve().parent, 2


def _column(columns: Sequence[str], given: str | None, known: Sequence[str], what: str, option: str,
            name: str) -> str | None:
    if given is not None:
        if given not in columns:
            raise DataError(f"{option} {given!r} is not a column of {name} (columns: {', '.join(columns)})")
        return given
    lower = {c.lower(): c for c in columns}
    return next((lower[k] for k in known if k in lower), None)


def _columns(columns: Sequence[str], image_col: str | None, label_col: str | None, name: str) -> tuple[str, str]:
    """The image and label columns, given or detected; an ambiguous table is a DataError saying which flag."""
    image = _column(columns, image_col, IMAGE_COLUMNS, "image", "--image-col", name)
    label = _column(columns, label_col, LABEL_COLUMNS, "label", "--label-col", name)
    rest = [c for c in columns if c.lower() != "split" and c not in (image, label)]
    if image is None and label is not None and len(rest) == 1:
        image = rest[0]
    elif label is None and image is not None and len(rest) == 1:
        label = rest[0]
    elif image is None and label is None and len(rest) == 2:
        image, label = rest
    if image is None or label is None or image == label:
        raise DataError(f"Cannot tell the image and label columns of {name} (columns: {', '.join(columns)}); "
                        "name them with --image-col and --label-col")
    return image, label


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):  # None / NaN from a DataFrame
        return ""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def _resolve(value: str, base: Path) -> str:
    """The image file a cell names: as given, else with an image extension added (``image_id`` cells)."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if path.exists() or path.suffix.lower() in IMAGE_EXTENSIONS:
        return os.fspath(path)
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        if (candidate := path.with_name(path.name + ext)).exists():
            return os.fspath(candidate)
    return os.fspath(path)


def _rows(records: list[dict[str, Any]], image: str, label: str, split_col: str | None, base: Path,
          first: int, name: str, default_split: str) -> tuple[list[Row], list[tuple[str, str]]]:
    """Every usable row as ``(row number, path, label, split)`` and the skipped ones."""
    rows: list[Row] = []
    skipped: list[tuple[str, str]] = []
    for i, rec in enumerate(records):
        n = i + first
        where = f"row {n} of {name}"
        value, lab = _text(rec.get(image)), _text(rec.get(label))
        part = _text(rec.get(split_col)).lower() if split_col else default_split
        if not value:
            skipped.append((f"{name}:{n}", f"{where}: empty {image!r}"))
        elif not lab:
            skipped.append((value, f"{where}: empty label"))
        elif part not in SPLITS:
            skipped.append((value, f"{where}: split {part!r} is not one of {', '.join(SPLITS)}"))
        else:
            rows.append((n, _resolve(value, base), lab, SPLITS[part]))
    return rows, skipped


def _dedupe(rows: list[Row], name: str) -> tuple[list[Row], list[tuple[str, str]]]:
    """``rows`` without paths listed twice: every copy of a path with two labels, the later copies otherwise."""
    labels: dict[str, set[str]] = {}
    for _, path, lab, _ in rows:
        labels.setdefault(os.path.realpath(path), set()).add(lab)
    kept: list[Row] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, path, lab, part in rows:
        key = os.path.realpath(path)
        if len(labels[key]) > 1:
            skipped.append((path, f"row {n} of {name}: listed with different labels "
                                  f"({', '.join(sorted(labels[key]))}), every copy skipped"))
        elif key in seen:
            skipped.append((path, f"row {n} of {name}: listed twice, the copy skipped"))
        else:
            seen.add(key)
            kept.append((n, path, lab, part))
    return kept, skipped


def _sorted_classes(labels: Iterable[str]) -> list[str]:
    names = set(labels)
    if all(x.lstrip("-").isdigit() for x in names):
        return sorted(names, key=int)
    return sorted(names)


def read_table(data: Any, *, image_col: str | None = None, label_col: str | None = None,
               images: str | os.PathLike | None = None, default_split: str = "train",
               progress: bool = True) -> tuple[list[tuple[Row, int, str]], list[tuple[str, str]], str, Path]:
    """Every kept row of a table with its image's size and content hash, the skipped rows, the table's name
    and its image folder; rows without a ``split`` column go to ``default_split``."""
    columns, records, name, folder, first = _read(data)
    image, label = _columns(columns, image_col, label_col, name)
    split_col = next((c for c in columns if c.lower() == "split"), None)
    base = Path(images).expanduser().resolve() if images is not None else folder
    if images is not None and not base.is_dir():
        raise DataError(f"--images {images}: not a folder")
    rows, skipped = _rows(records, image, label, split_col, base, first, name, default_split)
    rows, dupes = _dedupe(rows, name)
    skipped += dupes
    kept = []
    for row, (reason, size, content) in zip(rows, run_checks([r[1] for r in rows], progress)):
        if reason is None:
            kept.append((row, size, content))
        else:
            skipped.append((row[1], f"row {row[0]} of {name}: {reason}"))
    return kept, skipped, name, base


def check_known(rows: list[tuple[Row, int, str]], classes: Sequence[str], what: str, name: str) -> None:
    """A DataError naming the first row of ``rows`` whose label is not one of ``classes``."""
    known = set(classes)
    for (n, _, lab, _), _, _ in rows:
        if lab not in known:
            raise DataError(f"row {n} of {name}: {what} class {lab!r} has no training images (training classes: "
                            f"{', '.join(classes)}); add training images for it or remove the row")


def _hashed(rows: list[tuple[Row, int, str]], label: dict[str, int], base: Path) -> list[str]:
    out = []
    for (_, path, lab, part), size, content in rows:
        rel = os.path.relpath(path, base) if os.path.isabs(path) else path
        out.append(f"{part}\0{Path(rel).as_posix()}\0{size}\0{content}\0{label[lab]}")
    return out


def test_files(rows: list[tuple[Row, int, str]], classes: Sequence[str], base: Path) -> tuple[ImageFiles, str]:
    """The test rows (labels matched to ``classes`` by name) as a dataset, and their fingerprint."""
    label = {c: i for i, c in enumerate(classes)}
    rows = sorted(rows, key=lambda r: (label[r[0][2]], r[0][1]))
    fp = fingerprint({"kind": "test", "classes": list(classes)}, _hashed(rows, label, base))
    return ImageFiles([(r[0][1], label[r[0][2]]) for r in rows], classes, os.fspath(base)), fp


def from_table(data: Any, val_fraction: float, seed: int, progress: bool, *, image_col: str | None = None,
               label_col: str | None = None, images: str | os.PathLike | None = None) -> DataSplit:
    """The split of a labels table (see the module docstring)."""
    kept, skipped, name, base = read_table(data, image_col=image_col, label_col=label_col, images=images,
                                           progress=progress)
    parts: dict[str, list[tuple[Row, int, str]]] = {"train": [], "val": [], "test": []}
    for r in kept:
        parts[r[0][3]].append(r)
    classes = _sorted_classes(r[0][2] for r in parts["train"])
    if len(classes) < 2:
        raise DataError(f"Need at least 2 classes with usable training images in {name}, found "
                        f"{len(classes)} ({', '.join(classes) or 'none'}); {len(skipped)} row(s) skipped")
    check_known(parts["val"], classes, "validation", name)
    check_known(parts["test"], classes, "test", name)
    label = {c: i for i, c in enumerate(classes)}
    train = sorted(parts["train"], key=lambda r: (label[r[0][2]], os.path.relpath(r[0][1], base)))
    params: dict[str, Any] = {}
    val = sorted(parts["val"], key=lambda r: (label[r[0][2]], os.path.relpath(r[0][1], base)))
    if not val:
        tr, va = stratified_split([label[r[0][2]] for r in train], classes, val_fraction, seed)
        train, val = [train[i] for i in tr], [train[i] for i in va]
        params = {"val_fraction": val_fraction, "seed": seed}
    fp = fingerprint({"kind": "table", "classes": classes, **params},
                     _hashed(train, label, base) + _hashed(val, label, base))

    def files(rows: list[tuple[Row, int, str]]) -> ImageFiles:
        return ImageFiles([(r[0][1], label[r[0][2]]) for r in rows], classes, os.fspath(base))

    test, test_fp = test_files(parts["test"], classes, base) if parts["test"] else (None, "")
    source = name if name == "the DataFrame" else os.fspath(Path(data).expanduser().resolve())
    return DataSplit(files(train), files(val), classes, source, fp, skipped, test=test, test_fingerprint=test_fp)
