"""Torch Datasets as data: the item datasets of a split, Dataset objects and torchvision built-ins.

* **A torch Dataset** (map-style, items ``(image, label)``; PIL/tensor/array images, see
  :func:`~.images.as_rgb`): split like a folder, stratified by its labels (:func:`known_labels`). Classes
  come from ``.classes``, else ``"0"``, ``"1"``, …. Its fingerprint hashes its class name, length, a few
  sampled items' bytes, the split parameters and the classes.
* **A built-in name** (:func:`dataset_names`, case and ``-``/``_`` insensitive): a torchvision dataset under
  ``data_root`` (default :func:`default_data_root`), in the sub-folder torchvision itself uses, so an
  existing torchvision download can be reused. Train is the official training split; val is the official
  validation split where the dataset has one and the official test split otherwise (:data:`BUILTINS`).
  Nothing is downloaded unless ``download=True``. Its fingerprint hashes the name, split sizes and root.

An image that fails at ``__getitem__`` time (deleted or changed after the scan) is a :class:`DataError`
naming the file.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError
from . import images
from .split import DataSplit, fingerprint, progress_bar, stratified_split

DATA_ROOT_ENV = "BACKBONE_ZOO_DATA"
"""Environment variable naming where built-in datasets live."""

_FINGERPRINT_SAMPLES = 8  # items hashed to fingerprint a Dataset object


class ImageFiles(Dataset):
    """Image files with labels: items ``(PIL RGB image, label)``; ``samples`` holds ``(path, label)``."""

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], root: str = "") -> None:
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.classes = list(classes)
        self.root = root

    @property
    def targets(self) -> list[int]:
        """Labels in item order."""
        return [y for _, y in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        try:
            return images.load_image(path), label
        except DataError as exc:
            raise DataError(f"{exc}. It passed the scan: if it was deleted or changed since, run again to "
                            "rescan.") from exc


class _Items(Dataset):
    """``base[indices[i]]`` with the image converted to RGB and the label to ``int``."""

    def __init__(self, base: Dataset, indices: Sequence[int] | None, classes: Sequence[str],
                 targets: Sequence[int] | None) -> None:
        self.base = base
        self.indices = None if indices is None else list(indices)
        self.classes = list(classes)
        self.targets = None if targets is None else list(targets)

    def __len__(self) -> int:
        return len(self.base) if self.indices is None else len(self.indices)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        i = index if self.indices is None else self.indices[index]
        img, label = self.base[i]
        return images.as_rgb(img, f"item {i} of {type(self.base).__name__}"), int(label)


def item_name(dataset: Any, index: int) -> str:
    """What identifies item ``index`` of a split to a person: the image file (relative to the data folder)
    for image folders, else ``"<DatasetClass>[i]"`` with the index into the original dataset."""
    base = dataset
    while isinstance(base, Transformed):
        base = base.dataset
    if isinstance(base, ImageFiles):
        path = base.samples[index][0]
        return os.path.relpath(path, base.root) if base.root else path
    if isinstance(base, _Items):
        i = index if base.indices is None else base.indices[index]
        return f"{type(base.base).__name__}[{i}]"
    return f"{type(base).__name__}[{index}]"


class Transformed(Dataset):
    """``dataset`` with ``transform`` applied to each image: items ``(transform(img), label)``."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any]) -> None:
        self.dataset = dataset
        self.transform = transform

    @property
    def classes(self) -> list[str] | None:
        """The wrapped dataset's classes (``None`` when it has none)."""
        return getattr(self.dataset, "classes", None)

    @property
    def targets(self) -> list[int] | None:
        """The wrapped dataset's labels in item order, when it knows them without loading images."""
        return getattr(self.dataset, "targets", None)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img, label = self.dataset[index]
        return self.transform(img), label


def _exposed_labels(ds: Any) -> list[int] | None:
    """Labels a dataset exposes without loading images, in item order (``None``: unknown)."""
    if isinstance(ds, torch.utils.data.Subset):
        base = _exposed_labels(ds.dataset)
        return None if base is None else [base[i] for i in ds.indices]
    for attr in ("targets", "_labels", "labels"):
        value = getattr(ds, attr, None)
        if value is None or isinstance(value, (str, bytes)):
            continue
        try:
            labels = [int(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
        except (TypeError, ValueError):
            continue
        if len(labels) == len(ds):
            return labels
    return None


def known_labels(dataset: Dataset, progress: bool = False) -> list[int]:
    """The labels of ``dataset`` in item order: read from ``.targets``/``._labels``/``.labels`` (through
    ``Subset`` wrappers) without loading images, or, failing those, from every item once."""
    labels = _exposed_labels(dataset)
    if labels is not None:
        return labels
    n = len(dataset)  # type: ignore[arg-type]
    with progress_bar(n, "reading labels", "item", progress) as bar:
        labels = []
        for i in range(n):
            labels.append(int(dataset[i][1]))
            bar.update()
    return labels


def _base_attr(ds: Any, attr: str) -> Any:
    """``ds.<attr>``, looking through ``Subset`` wrappers."""
    while not hasattr(ds, attr) and isinstance(ds, torch.utils.data.Subset):
        ds = ds.dataset
    return getattr(ds, attr, None)


def _dataset_classes(ds: Any, labels: Sequence[int], name: str) -> list[str]:
    lo, hi = min(labels), max(labels)
    if lo < 0:
        raise DataError(f"{name} has label {lo}; labels must be class indices 0..K-1 (drop unlabelled items "
                        f"with torch.utils.data.Subset).")
    classes = _base_attr(ds, "classes")
    if classes is not None and not isinstance(classes, (str, bytes)):
        classes = [str(c) for c in classes]
        if len(classes) <= hi:
            raise DataError(f"{name} has label {hi} but only {len(classes)} classes in .classes.")
        return classes
    k = max(hi + 1, int(_base_attr(ds, "num_classes") or 0))
    return [str(i) for i in range(k)]


def _item_bytes(item: Any) -> bytes:
    img, label = item
    if isinstance(img, Image.Image):
        data = img.mode.encode() + repr(img.size).encode() + img.tobytes()
    elif isinstance(img, torch.Tensor):
        data = repr((img.dtype, tuple(img.shape))).encode() + img.detach().cpu().contiguous().numpy().tobytes()
    elif isinstance(img, np.ndarray):
        data = repr((img.dtype.str, img.shape)).encode() + np.ascontiguousarray(img).tobytes()
    else:
        data = repr(img).encode()
    return hashlib.sha256(data + b"|" + str(int(label)).encode()).digest()


def from_dataset(ds: Dataset, val_fraction: float, seed: int, progress: bool) -> DataSplit:
    """The stratified, seeded split of a map-style torch Dataset of ``(image, label)`` items."""
    name = type(ds).__name__
    if isinstance(ds, torch.utils.data.IterableDataset) or not hasattr(ds, "__len__"):
        raise DataError(f"{name} is not a map-style Dataset with __len__ and __getitem__; wrap it in one.")
    n = len(ds)  # type: ignore[arg-type]
    if n == 0:
        raise DataError(f"{name} is empty.")
    first = ds[0]
    if not isinstance(first, (tuple, list)) or len(first) < 2:
        raise DataError(f"{name} items must be (image, label) pairs; item 0 is {type(first).__name__}.")
    images.as_rgb(first[0], f"item 0 of {name}")
    labels = known_labels(ds, progress)
    classes = _dataset_classes(ds, labels, name)
    if len(set(labels)) < 2:
        raise DataError(f"Need at least 2 classes, but every item of {name} has label {labels[0]}.")
    tr, va = stratified_split(labels, classes, val_fraction, seed)
    picks = sorted({int(round(j * (n - 1) / max(1, _FINGERPRINT_SAMPLES - 1))) for j in range(_FINGERPRINT_SAMPLES)})
    fp = fingerprint({"kind": "dataset", "class": f"{type(ds).__module__}.{type(ds).__qualname__}", "len": n,
                      "classes": classes, "val_fraction": val_fraction, "seed": seed},
                     (_item_bytes(ds[i]) for i in picks))
    return DataSplit(_Items(ds, tr, classes, [labels[i] for i in tr]),
                     _Items(ds, va, classes, [labels[i] for i in va]),
                     classes, f"<{name}>", fp, [])


BUILTINS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "cifar10": ("CIFAR10", {"train": True}, {"train": False}),
    "cifar100": ("CIFAR100", {"train": True}, {"train": False}),
    "stl10": ("STL10", {"split": "train"}, {"split": "test"}),
    "flowers102": ("Flowers102", {"split": "train"}, {"split": "val"}),
    "oxford-iiit-pet": ("OxfordIIITPet", {"split": "trainval"}, {"split": "test"}),
    "food101": ("Food101", {"split": "train"}, {"split": "test"}),
    "dtd": ("DTD", {"split": "train"}, {"split": "val"}),
    "fgvc-aircraft": ("FGVCAircraft", {"split": "train"}, {"split": "val"}),
}
"""Built-in name → (``torchvision.datasets`` class, train-split kwargs, val-split kwargs). Val is the
official validation split where the dataset has one (flowers102, dtd, fgvc-aircraft), else the official test
split (cifar10, cifar100, stl10, oxford-iiit-pet with ``trainval``/``test``, food101)."""


def dataset_names() -> list[str]:
    """Names of the torchvision datasets :func:`~zoo_core.data.load_data` accepts."""
    return list(BUILTINS)


def _norm_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def builtin_name(name: str) -> str | None:
    """The :data:`BUILTINS` name ``name`` spells (case and punctuation aside), or ``None``."""
    key = _norm_name(name)
    return next((b for b in BUILTINS if _norm_name(b) == key), None) if key else None


def default_data_root() -> Path:
    """Where built-in datasets live: ``$BACKBONE_ZOO_DATA`` or ``~/.cache/backbone-zoo/datasets``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "backbone-zoo" / "datasets"


def from_builtin(name: str, root: Path, download: bool, progress: bool) -> DataSplit:
    """The official train/val split of built-in ``name`` under ``root`` (downloaded there with ``download``)."""
    import torchvision.datasets as tvd

    cls_name, train_kw, val_kw = BUILTINS[name]
    cls = getattr(tvd, cls_name)
    parts = []
    for kw in (train_kw, val_kw):
        try:
            if download:
                root.mkdir(parents=True, exist_ok=True)
            parts.append(cls(root=os.fspath(root), download=download, **kw))
        except DataError:
            raise
        except Exception as exc:
            if download:
                raise DataError(f"Downloading {name} into {root} failed: {type(exc).__name__}: {exc}. Check the "
                                f"network, or put the files there by hand.") from exc
            raise DataError(f"Built-in dataset {name!r} not found (or incomplete) under {root}. Pass "
                            f"download=True (CLI: --download) to download it there, or point data_root / "
                            f"${DATA_ROOT_ENV} at where it already is. ({exc})") from exc
    train_ds, val_ds = parts
    train_labels, val_labels = known_labels(train_ds, progress), _exposed_labels(val_ds)
    classes = _dataset_classes(train_ds, train_labels, name)
    fp = fingerprint({"kind": "builtin", "name": name, "train": len(train_ds), "val": len(val_ds),
                      "root": os.fspath(root.resolve())})
    return DataSplit(_Items(train_ds, None, classes, train_labels), _Items(val_ds, None, classes, val_labels),
                     classes, name, fp, [])


