"""Image folders → a :class:`~.split.DataSplit`: the scan, its symlink rules, and pre-split layouts.

* **Image folder** ``root/<class>/**/*.{jpg,jpeg,png,bmp,gif,webp,tif,tiff}`` (extensions in any case,
  sub-folders of a class folder included). Classes are the class-folder names in sorted order; the
  validation split is :func:`~.split.stratified_split` of the sorted files.
* **Pre-split folder** ``root/train/<class>/…`` + ``root/val/<class>/…`` (``valid``/``validation`` also
  accepted): used as given, classes from ``train``; ``val_fraction``/``seed`` are ignored. ``root/test`` is
  the test split (:func:`~.load.load_data` reads it; never used to choose anything). A folder holding only ``train`` (and possibly ``test``) is split as an image folder from
  ``root/train``.

Every candidate image is checked once at scan time (:func:`~.images.check_image`), so a bad file never
reaches a DataLoader worker: a zero-byte, corrupt, truncated or too large image, a non-image file
(``notes.txt``, ``.DS_Store``, ``._x.jpg``), a hidden folder or a loose file next to the class folders is
skipped and listed in ``skipped`` as ``(path, reason)``. A class folder with no usable image raises a
:class:`~.split.DataWarning`, is listed and is no class; fewer than 2 classes, no images at all, or a
validation class without training images is a :class:`DataError`.

The fingerprint hashes (relative path, size, SHA-256 of the content) of every kept file, the split
parameters and the class list: moving the folder or touching a file keeps it; changing any byte of an
image, adding or removing one changes it, even with its size and mtime restored.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError
from .images import IMAGE_EXTENSIONS, check_image, content_hash, why_unreadable
from .sources import ImageFiles
from .split import DataSplit, DataWarning, fingerprint, progress_bar, stratified_split

THREADED_CHECK_MIN = 64
"""Scan-time image checks run in a thread pool from this many files."""

_VAL_DIRS = ("val", "valid", "validation")  # accepted names of the validation folder of a pre-split root


@dataclass
class _Scanned:
    """Kept files of one folder of class folders, and what was skipped."""

    files: dict[str, list[tuple[str, int, str]]]  # class → sorted (relative posix path, size, content hash)
    skipped: list[tuple[str, str]]


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in ("__MACOSX", "Thumbs.db", "desktop.ini")


_MAX_FACTS = 1_000_000  # per-process memo of checked files; cleared when it grows past this
# (path, size, mtime_ns, ctime_ns, inode) → (check_image reason, SHA-256 of the content): a file is read
# and checked once per process while none of these change. ctime moves on every write and every utime(), so
# content replaced in place with its size and mtime restored is still re-read.
_FILE_FACTS: dict[tuple[str, int, int, int, int], tuple[str | None, str]] = {}


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
    walks the other classes) nor into another class of the scanned folder. Such a link is skipped and
    listed, never followed, so no image gets the wrong label or is counted twice.
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


def run_checks(paths: list[str], progress: bool) -> list[tuple[str | None, int, str]]:
    """:func:`_examine` of every path, in order; in a thread pool from :data:`THREADED_CHECK_MIN` paths
    (decoders and hashlib release the GIL and scans are often I/O-bound: threads help even on few cores)."""
    threaded = len(paths) >= THREADED_CHECK_MIN
    with progress_bar(len(paths), "checking images", "img", progress) as bar, \
            (ThreadPoolExecutor(min(16, 2 * (os.cpu_count() or 1))) if threaded else nullcontext()) as pool:
        out = []
        for facts in (pool.map(_examine, paths, chunksize=16) if threaded else map(_examine, paths)):
            out.append(facts)
            bar.update()
        return out


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


def scan_classes(folder: Path, rel_base: Path, progress: bool) -> _Scanned:
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
    checked = run_checks([os.fspath(rel_base / rel) for _, rel in flat], progress)
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


def from_folder(root: Path, val_fraction: float, seed: int, progress: bool) -> DataSplit:
    """The split of image folder ``root`` (class folders, or pre-split ``train``/``val``); see the module
    docstring."""
    if not root.is_dir():
        raise DataError(f"{root} is a file; pass a folder with one subfolder of images per class.")
    root = root.resolve()
    layout, train_dir, val_dir = _layout(root)
    scan = scan_classes(train_dir, root, progress)
    classes = sorted(scan.files)
    _need_two_classes(classes, train_dir)
    skipped = list(scan.skipped)
    label = {c: i for i, c in enumerate(classes)}
    train_rows = [(rel, size, h, label[c]) for c in classes for rel, size, h in scan.files[c]]
    if val_dir is None:
        tr, va = stratified_split([r[3] for r in train_rows], classes, val_fraction, seed)
        val_rows = [train_rows[i] for i in va]
        train_rows = [train_rows[i] for i in tr]
        params: dict[str, Any] = {"val_fraction": val_fraction, "seed": seed}
    else:
        vscan = scan_classes(val_dir, root, progress)
        unseen = sorted(set(vscan.files) - set(classes))
        if unseen:
            raise DataError(f"Validation class {unseen[0]!r} (folder {val_dir / unseen[0]}) has no images in "
                            f"the training folder {train_dir}; add training images for it or remove it.")
        skipped += vscan.skipped
        val_rows = [(rel, size, h, label[c]) for c in classes for rel, size, h in vscan.files.get(c, [])]
        params = {}
    fp = fingerprint(
        {"kind": "folder", "layout": layout, "classes": classes, **params},
        (f"{s}\0{rel}\0{size}\0{h}\0{y}" for s, rows in (("train", train_rows), ("val", val_rows))
         for rel, size, h, y in rows),
    )

    def files(rows: list[tuple[str, int, str, int]]) -> ImageFiles:
        return ImageFiles([(os.fspath(root / rel), y) for rel, _, _, y in rows], classes, os.fspath(root))

    return DataSplit(files(train_rows), files(val_rows), classes, os.fspath(root), fp, skipped)


