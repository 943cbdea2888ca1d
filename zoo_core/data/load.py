"""The data room's entry point: :func:`load_data`, whatever the user points at → a :class:`~.split.DataSplit`."""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..errors import DataError
from .folders import from_folder, scan_classes
from .sources import BUILTINS, builtin_name, default_data_root, from_builtin, from_dataset
from .split import DataSplit, check_fraction
from .table import check_known, from_table, is_table, read_table, test_files


def load_test(split: DataSplit, test: str | os.PathLike | Any, *, image_col: str | None = None,
              label_col: str | None = None, images: str | os.PathLike | None = None,
              progress: bool = True) -> DataSplit:
    """``split`` with ``test`` as its test split: a folder of class folders, or a labels table (every row, its
    ``split`` column ignored). Classes are matched by name; one unknown to training is a :class:`DataError`."""
    if is_table(test):
        kept, skipped, name, base = read_table(test, image_col=image_col, label_col=label_col, images=images,
                                               progress=progress)
        check_known(kept, split.classes, "test", name)
    else:
        base = Path(test).expanduser().resolve()
        if not base.is_dir():
            raise DataError(f"Test data not found: {base}. Pass a folder of class folders or a labels CSV.")
        scan = scan_classes(base, base, progress)
        skipped = list(scan.skipped)
        unknown = sorted(set(scan.files) - set(split.classes))
        if unknown:
            raise DataError(f"Test class {unknown[0]!r} (folder {base / unknown[0]}) has no training images "
                            f"(training classes: {', '.join(split.classes)}); remove it or add training images")
        kept = [((0, os.fspath(base / rel), c, "test"), size, h) for c, files in scan.files.items()
                for rel, size, h in files]
    ds, fp = test_files(kept, split.classes, base)
    return dataclasses.replace(split, test=ds, test_fingerprint=fp, skipped=split.skipped + skipped)


def load_data(data: str | os.PathLike | Dataset | DataSplit | Any, *, val_fraction: float = 0.2, seed: int = 0,
              download: bool = False, data_root: str | os.PathLike | None = None,
              progress: bool = True, image_col: str | None = None, label_col: str | None = None,
              images: str | os.PathLike | None = None, test: str | os.PathLike | Any = None) -> DataSplit:
    """A :class:`DataSplit` of ``data``: an image folder (:mod:`.folders`), a labels table — a ``.csv``/``.tsv``/
    ``.parquet`` path or a pandas DataFrame (:mod:`.table`) —, a built-in name or a torch Dataset
    (:mod:`.sources`), or a DataSplit (returned as is). An existing folder always wins over a built-in name;
    a path that does not exist and is no built-in name is a :class:`DataError` naming it.

    The test split is ``test`` when given (:func:`load_test`), else a pre-split folder's ``root/test`` or a
    table's ``test`` rows; nothing chooses by it.

    :param val_fraction: share of each class held out for validation (folders and Datasets), in [0, 1).
    :param seed: seeds the split; the same seed and files give the same split in every process.
    :param download: let a built-in dataset download into ``data_root`` when it is missing.
    :param data_root: where built-ins live (default :func:`default_data_root`).
    :param progress: show progress bars for long scans.
    :param image_col, label_col: a table's image and label columns (default: detected from the names).
    :param images: the folder a table's relative paths start from (default: the table's folder).
    """
    split = _load(data, val_fraction, seed, download, data_root, progress, image_col, label_col, images)
    if test is None and isinstance(data, (str, os.PathLike)) and not is_table(data):
        default = Path(data).expanduser() / "test"
        if (default.parent / "train").is_dir() and default.is_dir():
            test = default
    if test is not None:
        split = load_test(split, test, image_col=image_col, label_col=label_col, images=images, progress=progress)
    return split


def _load(data: Any, val_fraction: float, seed: int, download: bool, data_root: str | os.PathLike | None,
          progress: bool, image_col: str | None, label_col: str | None,
          images: str | os.PathLike | None) -> DataSplit:
    if isinstance(data, DataSplit):
        return data
    check_fraction(val_fraction)
    if is_table(data):
        return from_table(data, val_fraction, seed, progress, image_col=image_col, label_col=label_col,
                          images=images)
    if isinstance(data, Dataset):
        return from_dataset(data, val_fraction, seed, progress)
    if not isinstance(data, (str, os.PathLike)):
        raise DataError(f"Cannot load data from a {type(data).__name__}: pass a folder path, a labels CSV, a "
                        f"DataFrame, a built-in dataset name ({', '.join(BUILTINS)}), a torch Dataset or a DataSplit.")
    text = os.fspath(data)
    path = Path(text).expanduser()
    if path.exists():
        return from_folder(path, val_fraction, seed, progress)
    name = builtin_name(text) if isinstance(data, str) else None
    if name is not None:
        root = Path(data_root).expanduser() if data_root is not None else default_data_root()
        return from_builtin(name, root, download, progress)
    close = difflib.get_close_matches(text.lower(), list(BUILTINS), n=1)
    hint = f" Did you mean the built-in dataset {close[0]!r}?" if close else ""
    raise DataError(f"Data folder not found: {path}. Pass a folder with one subfolder of images per class, or a "
                    f"built-in dataset name ({', '.join(BUILTINS)}).{hint}")
