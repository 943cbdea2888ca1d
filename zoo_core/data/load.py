"""The data room's entry point: :func:`load_data`, whatever the user points at → a :class:`~.split.DataSplit`."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from torch.utils.data import Dataset

from ..errors import DataError
from .folders import from_folder
from .sources import BUILTINS, builtin_name, default_data_root, from_builtin, from_dataset
from .split import DataSplit, check_fraction


def load_data(data: str | os.PathLike | Dataset | DataSplit, *, val_fraction: float = 0.2, seed: int = 0,
              download: bool = False, data_root: str | os.PathLike | None = None,
              progress: bool = True) -> DataSplit:
    """A :class:`DataSplit` of ``data``: an image folder (:mod:`.folders`), a built-in name or a torch Dataset
    (:mod:`.sources`), or a DataSplit (returned as is). An existing folder always wins over a built-in name;
    a path that does not exist and is no built-in name is a :class:`DataError` naming it.

    :param val_fraction: share of each class held out for validation (folders and Datasets), in [0, 1).
    :param seed: seeds the split; the same seed and files give the same split in every process.
    :param download: let a built-in dataset download into ``data_root`` when it is missing.
    :param data_root: where built-ins live (default :func:`default_data_root`).
    :param progress: show progress bars for long scans.
    """
    if isinstance(data, DataSplit):
        return data
    check_fraction(val_fraction)
    if isinstance(data, Dataset):
        return from_dataset(data, val_fraction, seed, progress)
    if not isinstance(data, (str, os.PathLike)):
        raise DataError(f"Cannot load data from a {type(data).__name__}: pass a folder path, a built-in dataset "
                        f"name ({', '.join(BUILTINS)}), a torch Dataset or a DataSplit.")
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
