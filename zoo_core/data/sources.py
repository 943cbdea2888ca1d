"""The data room: image folders, torchvision built-ins and Datasets → a deterministic train/val split.

:func:`load_data` turns what the user points at into a :class:`DataSplit` whose ``train``/``val``
datasets yield raw ``(PIL.Image in RGB, int label)`` items. Preprocessing is separate:
:func:`train_transform`/:func:`eval_transform` turn a PIL image into a ``uint8`` ``[3, H, W]`` tensor
at the backbone's :class:`~zoo_core.DataConfig` size, and :func:`normalize` turns a batch into
normalised ``float32`` on the batch's device (so the mean/std work runs on the GPU, not in workers).
:func:`make_loader` builds a seeded, reproducible ``DataLoader``.

Sources
-------
* **Image folder** ``root/<class>/**/*.{jpg,jpeg,png,bmp,gif,webp,tif,tiff}`` (extensions in any case,
  sub-folders of a class folder included). Classes are the class-folder names in sorted order. The
  validation split is stratified and deterministic: per class, the sorted files are shuffled by
  ``random.Random(f"{seed}:{class}")`` (keyed by class name, so adding a class leaves the other
  classes' splits alone) and the first ``round_half_up(val_fraction * n)`` go to val — at least 1 when
  the class has ``n >= 2`` images, always at least 1 left in train; ``val_fraction=0`` gives no val.
* **Pre-split folder** ``root/train/<class>/…`` + ``root/val/<class>/…`` (``valid``/``validation``
  also accepted): used as given, classes from ``train``; ``val_fraction``/``seed`` are ignored.
  ``root/test`` is never read. A folder holding only ``train`` (and possibly ``test``) is split as
  an image folder from ``root/train``.
* **Built-in name** (:func:`dataset_names`, case and ``-``/``_`` insensitive): a torchvision dataset
  under ``data_root`` (default ``$BACKBONE_ZOO_DATA`` or ``~/.cache/backbone-zoo/datasets``), in the
  sub-folder torchvision itself uses, so an existing torchvision download can be reused. Train is the
  official training split; val is the official validation split where the dataset has one
  (flowers102, dtd, fgvc-aircraft) and the official test split otherwise (cifar10, cifar100, stl10,
  oxford-iiit-pet uses ``trainval``/``test``, food101). Nothing is downloaded unless ``download=True``.
  An existing folder always wins over a built-in name.
* **A torch Dataset** (map-style, items ``(image, label)``; PIL/tensor/array images): split like a
  folder, stratified by its labels (read from ``.targets``/``._labels``/``.labels`` — or, failing
  those, by reading every item once). Classes from ``.classes``, else ``"0"``, ``"1"``, ….
* **A DataSplit**: returned as is.

Images are always converted to RGB by :func:`to_rgb`: EXIF orientation applied; grayscale, CMYK,
YCbCr, LAB, … converted; alpha (RGBA, LA, palette or RGB with transparency) *composited on white*
(what an image viewer shows; dropping alpha would expose whatever colour transparent pixels happen to
store); 16-bit (``I;16*``) scaled to 8 bit (``v * 255 / 65535``, not clipped); 32-bit ``I`` used as-is
when its maximum is ≤ 255, scaled as 16-bit when within 0–65535, else min–max stretched; float ``F``
scaled from [0, 1] (else min–max). Multi-frame files (GIF, TIFF) use their first frame.

Bad input
---------
* a path that does not exist (and is no built-in name) → :class:`DataError` naming it;
* a zero-byte file, a corrupt or truncated image, an image too large for Pillow (decompression-bomb
  guard), a non-image file (``notes.txt``, ``.DS_Store``, ``._x.jpg``), a hidden folder, a loose file
  next to the class folders → skipped, listed in :attr:`DataSplit.skipped` as ``(path, reason)``. Every
  candidate image is checked once at scan time (PNG: ``verify()`` of all chunk CRCs; JPEG: a decode at
  1/8 scale, which entropy-decodes every scan, so cut scan data is caught even behind a re-appended
  end-of-image marker; other formats: a full decode), so a bad file never reaches a DataLoader worker;
* symlinks: one inside a class folder may point anywhere inside that class folder or outside the
  scanned folder altogether (links into an image store); one pointing at its class folder or above it
  (``dog/loop -> ..``), or into another class of the scanned folder, is skipped and listed, never
  followed, so no image gets the wrong label or is counted twice. A symlinked class folder pointing at,
  above or inside the scanned folder is skipped the same way; a broken symlink is skipped;
* a class folder with no usable image → :class:`DataWarning`, recorded in ``skipped``, not a class;
* fewer than 2 classes → ``DataError("need at least 2 classes …")``; no images at all → DataError;
* a validation class with no training images → DataError naming the class and the folder;
* an image that fails at ``__getitem__`` time (deleted or changed after the scan) → DataError naming
  the file.

Fingerprint: folders hash (relative path, size, SHA-256 of the content) of every kept file, the split
parameters and the class list (moving the folder or touching a file keeps it; changing any byte of an
image, adding or removing one changes it — even with its size and mtime restored). Each file's check and
hash are memoised in the process by (path, size, mtime_ns, ctime_ns, inode); a new process reads every
file again;
built-ins hash name, split sizes and root; Datasets hash their class name, length, a few sampled
items' bytes, the split parameters and the classes. It is a 16-hex-digit SHA-256 prefix, the same in
every process.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import random
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode, v2

from .adapter import DataConfig
from .errors import DataError
from .util import digest

#: file extensions (lower case) that count as images in a class folder
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: RandomResizedCrop area range for training. (0.08, 1) is the ImageNet-from-scratch recipe; transfer
#: learning on small user datasets (few epochs, objects usually large and centred) does better with
#: milder crops that keep most of the object in view.
TRAIN_CROP_SCALE = (0.35, 1.0)
#: environment variable naming where built-in datasets live
DATA_ROOT_ENV = "BACKBONE_ZOO_DATA"

_VAL_DIRS = ("val", "valid", "validation")  # accepted names of the validation folder of a pre-split root
_THREADED_CHECK_MIN = 64  # scan-time image checks run in a thread pool from this many files
_PROGRESS_MIN = 1000  # show a progress bar for scans/label reads of at least this many items
_SMALL_DATASET = 512  # make_loader(num_workers=None) uses no workers below this many items (see make_loader)
_FINGERPRINT_SAMPLES = 8  # items hashed to fingerprint a Dataset object


class DataWarning(UserWarning):
    """Something in the data was left out (e.g. an empty class folder); training goes on."""


@dataclass
class DataSplit:
    """A train/val split: datasets of raw ``(PIL RGB image, int label)`` items plus provenance."""

    train: Dataset
    val: Dataset
    classes: list[str]
    source: str
    fingerprint: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """``len(classes)``."""
        return len(self.classes)

    @property
    def problems(self) -> list[tuple[str, str]]:
        """The skipped entries that deserve attention: everything but hidden/system files and folders."""
        return [(path, reason) for path, reason in self.skipped if not reason.startswith("hidden")]

    def summary(self) -> str:
        """One line: ``"N train / M val images, K classes (S skipped)"``; S excludes hidden files."""
        return (f"{len(self.train)} train / {len(self.val)} val images, {len(self.classes)} classes "
                f"({len(self.problems)} skipped)")


# ---------------------------------------------------------------------------------------------------
# Images → RGB
# ---------------------------------------------------------------------------------------------------
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scale_to_uint8(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    a = a.astype(np.float64)
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip(np.floor((a - lo) * (255.0 / (hi - lo)) + 0.5), 0, 255).astype(np.uint8)


def _gray_to_rgb(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a, "L").convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` loaded, EXIF-rotated and converted to 8-bit RGB (see the module docstring for each mode)."""
    img.load()  # also detaches the pixels from a file that a ``with Image.open()`` block closes
    if img.getexif().get(0x0112, 1) != 1:  # EXIF orientation
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _SIXTEEN_BIT:
        return _gray_to_rgb(_scale_to_uint8(np.asarray(img), 0, 65535))
    if mode == "I":
        a = np.asarray(img)
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0 and hi <= 255:
            return _gray_to_rgb(a.astype(np.uint8))
        if lo >= 0 and hi <= 65535:
            return _gray_to_rgb(_scale_to_uint8(a, 0, 65535))
        return _gray_to_rgb(_scale_to_uint8(a, lo, hi))
    if mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = float(a.min()), float(a.max())
        return _gray_to_rgb(_scale_to_uint8(a, 0.0, 1.0) if lo >= 0 and hi <= 1 else _scale_to_uint8(a, lo, hi))
    if mode in _ALPHA_MODES or "transparency" in img.info:
        return _composite_on_white(img)
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX, …


def why_unreadable(exc: BaseException) -> str:
    """Why an image could not be opened or decoded, in words: the one mapping from Pillow's exceptions
    (decompression bomb, unknown format, truncated or corrupt data, missing file) used by the folder scan,
    the data loaders and ``zoo predict``."""
    if isinstance(exc, Image.DecompressionBombError):
        return (f"image too large: {str(exc).rstrip('.')}; downscale it, or raise PIL.Image.MAX_IMAGE_PIXELS "
                "if you trust the file")
    if isinstance(exc, UnidentifiedImageError):
        return "not a readable image (unknown or corrupt format)"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "a folder, not an image file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return " ".join(f"corrupt image: {type(exc).__name__}: {exc}".split())


class UnreadableImage(DataError):
    """An image file that cannot be opened or decoded; ``path`` and ``reason`` (:func:`why_unreadable`)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"Cannot read image {self.path}: {reason}")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` as an RGB PIL image (:func:`to_rgb`); :class:`UnreadableImage` (a one-line
    ``DataError`` naming the file and saying why) if it cannot be read."""
    try:
        with Image.open(path) as img:
            return to_rgb(img)
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, ValueError, SyntaxError, struct.error, …
        raise UnreadableImage(path, why_unreadable(exc)) from exc


def _as_rgb(x: Any, where: str) -> Image.Image:
    """An item's image (PIL, CHW tensor or HWC array) as RGB PIL."""
    if isinstance(x, Image.Image):
        return to_rgb(x)
    if isinstance(x, torch.Tensor) and x.ndim in (2, 3):
        if x.ndim == 3 and x.shape[0] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
            x = x.permute(2, 0, 1)  # HWC tensor
        return to_rgb(v2.functional.to_pil_image(x.detach().cpu()))
    if isinstance(x, np.ndarray) and x.ndim in (2, 3):
        if x.dtype != np.uint8:
            raise DataError(f"{where}: numpy images must be uint8 HxW(xC), got dtype {x.dtype}")
        return to_rgb(Image.fromarray(x[..., 0] if x.ndim == 3 and x.shape[-1] == 1 else x))
    raise DataError(f"{where}: items must be (image, label) with a PIL image, CHW tensor or HWC uint8 array; "
                    f"got {type(x).__name__}. Pass the dataset without a transform.")


# ---------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------
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
            return load_image(path), label
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
        return _as_rgb(img, f"item {i} of {type(self.base).__name__}"), int(label)


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


# ---------------------------------------------------------------------------------------------------
# Splitting and fingerprints
# ---------------------------------------------------------------------------------------------------
def _n_val(n: int, val_fraction: float) -> int:
    if val_fraction <= 0 or n < 2:
        return 0
    return min(max(int(math.floor(val_fraction * n + 0.5)), 1), n - 1)


def _stratified_split(labels: Sequence[int], keys: Sequence[str], val_fraction: float,
                      seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)``, both sorted; per class shuffled by ``Random(f"{seed}:{key}")``."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    train: list[int] = []
    val: list[int] = []
    for y, idx in sorted(by_class.items()):
        random.Random(f"{seed}:{keys[y]}").shuffle(idx)
        k = _n_val(len(idx), val_fraction)
        val += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(val)


def _fingerprint(header: dict[str, Any], rows: Iterable[str | bytes] = ()) -> str:
    return digest({"v": 2, **header}, rows, 16)  # v2: folders hash file contents, not mtimes


def _check_fraction(val_fraction: float) -> None:
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction!r}")


# ---------------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------------
@dataclass
class _Scanned:
    """Kept files of one folder of class folders, and what was skipped."""

    files: dict[str, list[tuple[str, int, str]]]  # class → sorted (relative posix path, size, content hash)
    skipped: list[tuple[str, str]]


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in ("__MACOSX", "Thumbs.db", "desktop.ini")


def check_image(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a usable image (``None`` when it is); cheap enough to run on every file.

    PNG: ``verify()`` (every chunk's CRC, no decoding); JPEG: a decode at 1/8 scale, which still
    entropy-decodes every scan, so cut scan data fails here even when the end-of-image marker was put
    back; other formats: a full decode. Reasons come from :func:`why_unreadable`.
    """
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as img:
            if img.format == "PNG":
                img.verify()  # walks every chunk and checks its CRC, without decoding pixels
            else:
                if img.format == "JPEG":
                    img.draft(img.mode, (1, 1))  # DCT scaling: ~1/8 of the work of a full decode
                img.load()
    except Exception as exc:  # noqa: BLE001 — any decoder failure means "skip this file"
        return why_unreadable(exc)
    return None


_HASH_CHUNK = 1 << 20
_MAX_FACTS = 1_000_000  # per-process memo of checked files; cleared when it grows past this
# (path, size, mtime_ns, ctime_ns, inode) → (check_image reason, SHA-256 of the content): a file is read
# and checked once per process while none of these change. ctime moves on every write and every utime(), so
# content replaced in place with its size and mtime restored is still re-read.
_FILE_FACTS: dict[tuple[str, int, int, int, int], tuple[str | None, str]] = {}


def content_hash(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file's bytes (hardware-accelerated on current x86 and ARM CPUs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _examine(path: str) -> tuple[str | None, int, str]:
    """``(reason it is unusable or None, size, content hash)`` of one candidate image, memoised."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return ("broken symlink (its target does not exist)" if os.path.islink(path) else why_unreadable(exc)), 0, ""
    key = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    facts = _FILE_FACTS.get(key)
    if facts is None:
        reason = check_image(path)
        try:
            facts = (reason, content_hash(path) if reason is None else "")
        except OSError as exc:
            facts = (f"vanished during the scan: {exc}", "")
        if len(_FILE_FACTS) >= _MAX_FACTS:
            _FILE_FACTS.clear()
        _FILE_FACTS[key] = facts
    return facts[0], st.st_size, facts[1]


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _link_escapes(link: str, class_real: str, scan_real: str) -> str | None:
    """Why following symlink ``link`` (inside a class folder) would mislabel images, or ``None``.

    It may point anywhere inside its own class folder, or outside the scanned folder altogether (a
    folder of links into an image store); it may not point at the class folder or above it (a loop that
    walks the other classes) nor into another class of the scanned folder.
    """
    target = os.path.realpath(link)
    if _within(target, class_real) and target != class_real:
        return None
    if _within(class_real, target):
        return f"symlink to {target}, the class folder or a folder above it: skipped (it would walk other classes)"
    if _within(target, scan_real):
        return f"symlink to {target}, outside its class folder: skipped (it would label another class's images)"
    return None


def _walk_class(class_dir: Path, rel_base: Path, scan_real: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Candidate image paths (relative to ``rel_base``) under ``class_dir``, and skipped entries."""
    found: list[str] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    class_real = os.path.realpath(class_dir)
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # reached twice through links inside the class folder
            dirnames[:] = []
            continue
        seen.add(real)
        keep = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            escape = _link_escapes(full, class_real, scan_real) if os.path.islink(full) else None
            if _is_hidden(d) or escape:
                skipped.append((full, escape or "hidden folder ignored"))
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if _is_hidden(name):
                skipped.append((full, "hidden or system file"))
            elif os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                skipped.append((full, f"not an image file (extensions: {' '.join(IMAGE_EXTENSIONS)})"))
            elif os.path.islink(full) and (escape := _link_escapes(full, class_real, scan_real)):
                skipped.append((full, escape))
            else:
                found.append(Path(full).relative_to(rel_base).as_posix())
    return found, skipped


def _run_checks(paths: list[str], progress: bool) -> list[tuple[str | None, int, str]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(paths), desc="checking images", unit="img", disable=not progress or len(paths) < _PROGRESS_MIN)
    try:
        if len(paths) < _THREADED_CHECK_MIN:
            out = []
            for p in paths:
                out.append(_examine(p))
                bar.update()
            return out
        # decoders and hashlib release the GIL and scans are often I/O-bound: threads help even on few cores
        workers = min(16, 2 * (os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            out = []
            for facts in pool.map(_examine, paths, chunksize=16):
                out.append(facts)
                bar.update()
            return out
    finally:
        bar.close()


def _class_folder_escape(entry: os.DirEntry, scan_real: str) -> str | None:
    """Why a symlinked class folder would relabel images (it points at or above the scanned folder, or
    at another folder inside it), or ``None``."""
    if not entry.is_symlink():
        return None
    target = os.path.realpath(entry.path)
    if _within(scan_real, target) or _within(target, scan_real):
        return (f"symlinked class folder to {target}, inside or above the data folder: skipped (its images "
                "would get a second label)")
    return None


def _scan_classes(folder: Path, rel_base: Path, progress: bool) -> _Scanned:
    """Scan ``folder/<class>/…``: every candidate image checked, empty classes warned about."""
    skipped: list[tuple[str, str]] = []
    candidates: dict[str, list[str]] = {}
    scan_real = os.path.realpath(folder)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        escape = _class_folder_escape(entry, scan_real) if entry.is_dir() else None
        if _is_hidden(entry.name):
            skipped.append((entry.path, "hidden folder or file ignored"))
        elif escape:
            skipped.append((entry.path, escape))
        elif entry.is_dir():
            found, skip = _walk_class(Path(entry.path), rel_base, scan_real)
            candidates[entry.name] = found
            skipped += skip
        else:
            skipped.append((entry.path, "not inside a class folder"))
    flat = [(cls, rel) for cls, rels in candidates.items() for rel in rels]
    checked = _run_checks([os.fspath(rel_base / rel) for _, rel in flat], progress)
    files: dict[str, list[tuple[str, int, str]]] = {cls: [] for cls in candidates}
    for (cls, rel), (reason, size, content) in zip(flat, checked):
        if reason is None:
            files[cls].append((rel, size, content))
        else:
            skipped.append((os.fspath(rel_base / rel), reason))
    for cls in list(files):
        if not files[cls]:
            del files[cls]
            where = folder / cls
            warnings.warn(f"Class folder {where} has no usable images; it is skipped and is not a class.",
                          DataWarning, stacklevel=4)
            skipped.append((os.fspath(where), "empty class folder: no usable images, not a class"))
    return _Scanned(files, skipped)


def _need_two_classes(classes: Sequence[str], folder: Path) -> None:
    if not classes:
        raise DataError(f"No images found in {folder}: expected one subfolder per class holding "
                        f"{'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} files.")
    if len(classes) < 2:
        raise DataError(f"Need at least 2 classes, found 1 ({classes[0]!r}) in {folder}: add a folder of "
                        f"images for every other class.")


def _layout(root: Path) -> tuple[str, Path, Path | None]:
    """``("split", root, None)``, ``("split", root/train, None)`` or ``("presplit", train, val)``."""
    dirs = {e.name.lower(): Path(e.path) for e in os.scandir(root) if e.is_dir() and not _is_hidden(e.name)}
    if "train" in dirs:
        for name in _VAL_DIRS:
            if name in dirs:
                return "presplit", dirs["train"], dirs[name]
        if set(dirs) <= {"train", "test"}:
            return "split", dirs["train"], None
    return "split", root, None


def _from_folder(root: Path, val_fraction: float, seed: int, progress: bool) -> DataSplit:
    if not root.is_dir():
        raise DataError(f"{root} is a file; pass a folder with one subfolder of images per class.")
    root = root.resolve()
    layout, train_dir, val_dir = _layout(root)
    scan = _scan_classes(train_dir, root, progress)
    classes = sorted(scan.files)
    _need_two_classes(classes, train_dir)
    skipped = list(scan.skipped)
    label = {c: i for i, c in enumerate(classes)}
    train_rows = [(rel, size, h, label[c]) for c in classes for rel, size, h in scan.files[c]]
    if val_dir is None:
        tr, va = _stratified_split([r[3] for r in train_rows], classes, val_fraction, seed)
        val_rows = [train_rows[i] for i in va]
        train_rows = [train_rows[i] for i in tr]
        params: dict[str, Any] = {"val_fraction": val_fraction, "seed": seed}
    else:
        vscan = _scan_classes(val_dir, root, progress)
        unseen = sorted(set(vscan.files) - set(classes))
        if unseen:
            raise DataError(f"Validation class {unseen[0]!r} (folder {val_dir / unseen[0]}) has no images in "
                            f"the training folder {train_dir}; add training images for it or remove it.")
        skipped += vscan.skipped
        val_rows = [(rel, size, h, label[c]) for c in classes for rel, size, h in vscan.files.get(c, [])]
        params = {}
    fingerprint = _fingerprint(
        {"kind": "folder", "layout": layout, "classes": classes, **params},
        (f"{s}\0{rel}\0{size}\0{h}\0{y}" for s, rows in (("train", train_rows), ("val", val_rows))
         for rel, size, h, y in rows),
    )

    def files(rows: list[tuple[str, int, str, int]]) -> ImageFiles:
        return ImageFiles([(os.fspath(root / rel), y) for rel, _, _, y in rows], classes, os.fspath(root))

    return DataSplit(files(train_rows), files(val_rows), classes, os.fspath(root), fingerprint, skipped)


# ---------------------------------------------------------------------------------------------------
# Torch Datasets
# ---------------------------------------------------------------------------------------------------
def _known_targets(ds: Any) -> list[int] | None:
    """Labels a dataset exposes without loading images, in item order (``None``: unknown)."""
    if isinstance(ds, torch.utils.data.Subset):
        base = _known_targets(ds.dataset)
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


def _base_attr(ds: Any, attr: str) -> Any:
    """``ds.<attr>``, looking through ``Subset`` wrappers."""
    while not hasattr(ds, attr) and isinstance(ds, torch.utils.data.Subset):
        ds = ds.dataset
    return getattr(ds, attr, None)


def _read_labels(ds: Dataset, n: int, progress: bool) -> list[int]:
    from tqdm.auto import tqdm

    out = []
    for i in tqdm(range(n), desc="reading labels", unit="item", disable=not progress or n < _PROGRESS_MIN):
        out.append(int(ds[i][1]))
    return out


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


def _from_dataset(ds: Dataset, val_fraction: float, seed: int, progress: bool) -> DataSplit:
    name = type(ds).__name__
    if isinstance(ds, torch.utils.data.IterableDataset) or not hasattr(ds, "__len__"):
        raise DataError(f"{name} is not a map-style Dataset with __len__ and __getitem__; wrap it in one.")
    n = len(ds)  # type: ignore[arg-type]
    if n == 0:
        raise DataError(f"{name} is empty.")
    first = ds[0]
    if not isinstance(first, (tuple, list)) or len(first) < 2:
        raise DataError(f"{name} items must be (image, label) pairs; item 0 is {type(first).__name__}.")
    _as_rgb(first[0], f"item 0 of {name}")
    labels = _known_targets(ds)
    if labels is None:
        labels = _read_labels(ds, n, progress)
    classes = _dataset_classes(ds, labels, name)
    if len(set(labels)) < 2:
        raise DataError(f"Need at least 2 classes, but every item of {name} has label {labels[0]}.")
    tr, va = _stratified_split(labels, classes, val_fraction, seed)
    picks = sorted({int(round(j * (n - 1) / max(1, _FINGERPRINT_SAMPLES - 1))) for j in range(_FINGERPRINT_SAMPLES)})
    fingerprint = _fingerprint({"kind": "dataset", "class": f"{type(ds).__module__}.{type(ds).__qualname__}", "len": n,
                           "classes": classes, "val_fraction": val_fraction, "seed": seed},
                          (_item_bytes(ds[i]) for i in picks))
    return DataSplit(_Items(ds, tr, classes, [labels[i] for i in tr]),
                     _Items(ds, va, classes, [labels[i] for i in va]),
                     classes, f"<{name}>", fingerprint, [])


# ---------------------------------------------------------------------------------------------------
# torchvision built-ins
# ---------------------------------------------------------------------------------------------------
# name → (torchvision.datasets class, train-split kwargs, val-split kwargs); val is the official
# validation split where one exists, else the official test split
_BUILTINS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "cifar10": ("CIFAR10", {"train": True}, {"train": False}),
    "cifar100": ("CIFAR100", {"train": True}, {"train": False}),
    "stl10": ("STL10", {"split": "train"}, {"split": "test"}),
    "flowers102": ("Flowers102", {"split": "train"}, {"split": "val"}),
    "oxford-iiit-pet": ("OxfordIIITPet", {"split": "trainval"}, {"split": "test"}),
    "food101": ("Food101", {"split": "train"}, {"split": "test"}),
    "dtd": ("DTD", {"split": "train"}, {"split": "val"}),
    "fgvc-aircraft": ("FGVCAircraft", {"split": "train"}, {"split": "val"}),
}


def dataset_names() -> list[str]:
    """Names of the torchvision datasets :func:`load_data` accepts."""
    return list(_BUILTINS)


def _norm_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _builtin(name: str) -> str | None:
    key = _norm_name(name)
    return next((b for b in _BUILTINS if _norm_name(b) == key), None) if key else None


def default_data_root() -> Path:
    """Where built-in datasets live: ``$BACKBONE_ZOO_DATA`` or ``~/.cache/backbone-zoo/datasets``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "backbone-zoo" / "datasets"


def _from_builtin(name: str, root: Path, download: bool, progress: bool) -> DataSplit:
    import torchvision.datasets as tvd

    cls_name, train_kw, val_kw = _BUILTINS[name]
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
    train_labels, val_labels = _known_targets(train_ds), _known_targets(val_ds)
    if train_labels is None:
        train_labels = _read_labels(train_ds, len(train_ds), progress)
    classes = _dataset_classes(train_ds, train_labels, name)
    fingerprint = _fingerprint({"kind": "builtin", "name": name, "train": len(train_ds), "val": len(val_ds),
                           "root": os.fspath(root.resolve())})
    return DataSplit(_Items(train_ds, None, classes, train_labels), _Items(val_ds, None, classes, val_labels),
                     classes, name, fingerprint, [])


# ---------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------
def load_data(data: str | os.PathLike | Dataset | DataSplit, *, val_fraction: float = 0.2, seed: int = 0,
              download: bool = False, data_root: str | os.PathLike | None = None,
              progress: bool = True) -> DataSplit:
    """A :class:`DataSplit` of ``data``: an image folder, a built-in name, a torch Dataset or a DataSplit.

    :param val_fraction: share of each class held out for validation (folders and Datasets), in [0, 1).
    :param seed: seeds the split; the same seed and files give the same split in every process.
    :param download: let a built-in dataset download into ``data_root`` when it is missing.
    :param data_root: where built-ins live (default :func:`default_data_root`).
    :param progress: show progress bars for long scans.
    """
    if isinstance(data, DataSplit):
        return data
    _check_fraction(val_fraction)
    if isinstance(data, Dataset):
        return _from_dataset(data, val_fraction, seed, progress)
    if not isinstance(data, (str, os.PathLike)):
        raise DataError(f"Cannot load data from a {type(data).__name__}: pass a folder path, a built-in dataset "
                        f"name ({', '.join(_BUILTINS)}), a torch Dataset or a DataSplit.")
    text = os.fspath(data)
    path = Path(text).expanduser()
    if path.exists():
        return _from_folder(path, val_fraction, seed, progress)
    name = _builtin(text) if isinstance(data, str) else None
    if name is not None:
        root = Path(data_root).expanduser() if data_root is not None else default_data_root()
        return _from_builtin(name, root, download, progress)
    close = difflib.get_close_matches(text.lower(), list(_BUILTINS), n=1)
    hint = f" Did you mean the built-in dataset {close[0]!r}?" if close else ""
    raise DataError(f"Data folder not found: {path}. Pass a folder with one subfolder of images per class, or a "
                    f"built-in dataset name ({', '.join(_BUILTINS)}).{hint}")


# ---------------------------------------------------------------------------------------------------
# Transforms and normalisation
# ---------------------------------------------------------------------------------------------------
def _interpolation(name: str) -> InterpolationMode:
    name = (name or "bilinear").lower()
    if name == "random":  # timm's train-time choice; bilinear is its eval-time meaning
        name = "bilinear"
    try:
        return InterpolationMode(name)
    except ValueError:
        choices = ", ".join(m.value for m in InterpolationMode)
        raise DataError(f"Unknown interpolation {name!r} in DataConfig; use one of {choices}.") from None


_PIL_ONLY = {InterpolationMode.BOX, InterpolationMode.HAMMING}  # no tensor kernels for these


def _pipeline(resize: Any, crop: list[Any], mode: InterpolationMode) -> v2.Compose:
    # uint8 tensor kernels (antialiased, vectorised) beat PIL's resize ~2x, so convert first when torch has
    # the interpolation; otherwise resize the PIL image and convert last
    if mode in _PIL_ONLY:
        return v2.Compose([resize, *crop, v2.PILToTensor()])
    return v2.Compose([v2.PILToTensor(), resize, *crop])


def eval_transform(cfg: DataConfig) -> Callable[[Any], torch.Tensor]:
    """PIL → ``uint8 [3, H, W]``: resize the shorter side to ``cfg.resize_size``, center-crop to ``cfg.image_size``."""
    mode = _interpolation(cfg.interpolation)
    return _pipeline(v2.Resize(cfg.resize_size, interpolation=mode, antialias=True), [v2.CenterCrop(cfg.image_size)],
                     mode)


def train_transform(cfg: DataConfig, augment: bool | Sequence[str] = True) -> Callable[[Any], torch.Tensor]:
    """PIL → ``uint8 [3, H, W]`` with training augmentation: ``True`` is RandomResizedCrop
    (:data:`TRAIN_CROP_SCALE`) + horizontal flip, a tuple names a policy (:mod:`zoo_core.augment`).

    ``augment=False`` (or ``()``) gives :func:`eval_transform`. Randomness comes from torch's RNG (seeded per
    worker by :func:`make_loader`; seed the main process yourself when ``num_workers=0``).
    """
    from . import augment as zaug  # augment builds on this module's transforms

    return zaug.train_transform(cfg, zaug.parse_policy(bool(augment) if isinstance(augment, bool) else augment))


@lru_cache(maxsize=64)
def _norm_constants(mean: tuple[float, ...], std: tuple[float, ...],
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    scale = (1.0 / (255.0 * s)).to(torch.float32).view(-1, 1, 1)
    shift = (-m / s).to(torch.float32).view(-1, 1, 1)
    return scale.to(device), shift.to(device)


def normalize(batch: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """``uint8``/float batch ``[B, C, H, W]`` (0–255 scale) → ``float32 (x/255 - mean)/std`` on its device."""
    if batch.ndim < 3 or batch.shape[-3] != len(cfg.mean):
        raise DataError(f"normalize expects [B, {len(cfg.mean)}, H, W] batches, got shape {tuple(batch.shape)}.")
    scale, shift = _norm_constants(tuple(cfg.mean), tuple(cfg.std), batch.device)
    return torch.addcmul(shift, batch.to(torch.float32), scale)  # one fused multiply-add, never in place


# ---------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------
def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed ``random`` and NumPy from the worker's torch seed (set by the loader)."""
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_num_workers(num_items: int) -> int:
    """Workers :func:`make_loader` uses by default: 0 below 512 items, else ``min(cpus - 1, 8)``."""
    if num_items < _SMALL_DATASET:
        return 0
    return max(0, min(_cpu_count() - 1, 8))


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int | None = None,
                sampler: Any = None, drop_last: bool = False, device: str | torch.device = "cpu") -> DataLoader:
    """A reproducible DataLoader: same ``seed`` → same order and same worker seeds.

    ``num_workers=None`` picks :func:`auto_num_workers`; workers persist across epochs; memory is pinned
    only for CUDA. A ``sampler`` takes precedence over ``shuffle``.
    """
    if num_workers is None:
        num_workers = auto_num_workers(len(dataset))  # type: ignore[arg-type]
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=bool(shuffle) and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
    )
