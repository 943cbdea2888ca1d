"""The checksummed entry store: atomic entry writes, verified reads, discard of bad entries, housekeeping.

An entry is ``<cache_root>/<kind>/<key>/`` holding ``.npy`` arrays and a ``meta.json`` sidecar with the
size and a CRC32 per 8 MiB chunk of every file. :class:`EntryWriter` builds it in a hidden sibling
directory and renames it into place when complete; :func:`open_entry` verifies it on read and deletes
(and reports) an entry that fails, so the caller rebuilds it. Many writers of one key — processes on many
hosts sharing the cache on NFS or a bucket — need no lock: the first rename wins and the others drop their
copy, so a reader never sees an entry replaced under it and a dead writer leaves only a ``.tmp-`` folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import logs
from ..errors import DataError, ZooError
from .keys import FORMAT_VERSION, cache_root

log = logging.getLogger(__name__)

KINDS = ("features", "pixels", "onnx")  # sub-directories of cache_root(), one per kind of entry
_CHUNK = 8 << 20  # bytes covered by one CRC32 in meta.json
_FULL_VERIFY_BYTES = 1 << 30  # files up to this size have every chunk verified on read
_SAMPLED_CHUNKS = 64  # chunks verified (plus first and last) for larger files

ArraySpec = tuple[tuple[int, ...], str, bool]  # (shape, dtype, memory-mapped) of one stored array


DISK_MARGIN = 64 << 20  # bytes an entry leaves free on its disk
_HOST = socket.gethostname().replace("/", "_")
_TEMP = re.compile(r"\.tmp-.+-(\d+)(?:@(.+))?-[0-9a-f]{8}")  # .tmp-<key>-<pid>[@<host>]-<token>


def byte_size(n: float) -> str:
    """``n`` bytes for a message: ``1.50 GiB``, ``64.00 MiB``, ``12.00 KiB`` or ``512 bytes``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.2f} {unit}"
    return f"{int(n)} bytes"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def remove_orphans(folder: Path) -> list[Path]:
    """Delete the unfinished entries (``.tmp-<key>-<pid>@<host>-…``) in ``folder`` that a killed process of
    this machine left behind (its pid is gone); the removed paths. Another machine's are left alone."""
    removed = []
    for p in folder.iterdir() if folder.is_dir() else ():
        m = _TEMP.fullmatch(p.name)
        if m and m.group(2) in (None, _HOST) and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    if removed:
        log.info("removed %d unfinished cache entr(ies) of killed processes in %s", len(removed), folder)
    return removed


class _BadEntry(Exception):
    """A cache entry that exists but cannot be trusted."""


def entry_dir(kind: str, key: str, root: Path | None = None) -> Path:
    """Directory of the ``kind`` entry ``key`` (it may not exist)."""
    return (root or cache_root()) / kind / key


def _chunk_crcs(path: Path) -> list[int]:
    crcs = []
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            crcs.append(zlib.crc32(block))
    return crcs


def _verify_file(path: Path, info: dict[str, Any]) -> None:
    if not path.is_file():
        raise _BadEntry(f"{path.name} is missing")
    size = path.stat().st_size
    if size != info["size"]:
        raise _BadEntry(f"{path.name} has {size} bytes, meta.json says {info['size']}")
    crcs = info["crc32"]
    if len(crcs) != max(1, -(-size // _CHUNK)) and size:
        raise _BadEntry(f"{path.name}: checksum list does not match its size")
    if size <= _FULL_VERIFY_BYTES:
        chunks = range(len(crcs))
    else:
        step = max(1, len(crcs) // _SAMPLED_CHUNKS)
        chunks = sorted({0, len(crcs) - 1, *range(0, len(crcs), step)})
    with open(path, "rb") as f:
        for i in chunks:
            f.seek(i * _CHUNK)
            if zlib.crc32(f.read(_CHUNK)) != crcs[i]:
                raise _BadEntry(f"{path.name}: checksum mismatch in bytes {i * _CHUNK}–{(i + 1) * _CHUNK}")


def _read_meta(entry: Path, kind: str, key: str) -> dict[str, Any]:
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise _BadEntry(f"meta.json unreadable ({type(exc).__name__})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION or meta.get("kind") != kind \
            or meta.get("key") != key or not isinstance(meta.get("files"), dict):
        raise _BadEntry("meta.json does not describe this entry")
    for name, info in meta["files"].items():
        _verify_file(entry / name, info)
    return meta


def _load_array(path: Path, shape: tuple[int, ...], dtype: str, mmap: bool) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise _BadEntry(f"{path.name} unreadable ({type(exc).__name__}: {exc})") from exc
    if tuple(arr.shape) != tuple(shape) or str(arr.dtype) != dtype:
        raise _BadEntry(f"{path.name} is {arr.dtype}{tuple(arr.shape)}, expected {dtype}{tuple(shape)}")
    return arr


def open_entry(entry: Path, kind: str, key: str, arrays: Callable[[dict[str, Any]], dict[str, ArraySpec]]
               ) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """``(meta, {file name: array})`` of a committed, verified entry; ``None`` when there is none.

    ``arrays(meta)`` names the files to load with their expected shape, dtype and whether to memory-map
    them. An entry that fails any check is logged as a warning, deleted and reported as ``None``.
    """
    if not entry.is_dir():
        return None
    try:
        meta = _read_meta(entry, kind, key)
        return meta, {name: _load_array(entry / name, tuple(shape), dtype, mmap)
                      for name, (shape, dtype, mmap) in arrays(meta).items()}
    except (_BadEntry, KeyError, TypeError, ValueError) as exc:
        log.warning("%s cache entry %s is corrupt (%s); deleting it and rebuilding", kind.removesuffix("s"),
                    entry, exc)
        shutil.rmtree(entry, ignore_errors=True)
        return None


_IDENTITY = ("parts", "n", "shape", "dim", "model_fingerprint")  # meta that tells two entries of a key apart


class EntryWriter:
    """Builds one entry in a hidden temp dir; :meth:`commit` renames it into place atomically."""

    def __init__(self, kind: str, key: str, root: Path | None = None) -> None:
        self.kind, self.key = kind, key
        self.final = entry_dir(kind, key, root)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(self.final.parent)
        self.tmp = self.final.parent / f".tmp-{key}-{os.getpid()}@{_HOST}-{secrets.token_hex(4)}"
        self.tmp.mkdir()
        self.meta: dict[str, Any] = {}
        self._open: list[np.memmap] = []

    def open_array(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.memmap:
        """A writable ``.npy`` memory map ``name`` in the entry; fails early when the disk is too full."""
        need = int(np.prod(shape)) * np.dtype(dtype).itemsize
        free = shutil.disk_usage(self.tmp).free
        if need + DISK_MARGIN > free:
            raise DataError(
                f"not enough free disk space for the {self.kind} cache in {self.tmp.parent}: {name} needs "
                f"{byte_size(need)} and {byte_size(DISK_MARGIN)} are kept free as a margin, but only "
                f"{byte_size(free)} are free; free space, point BACKBONE_ZOO_CACHE at a larger disk, run "
                "`zoo cache clear`, or turn the cache off (--no-cache-features: the same result, kept in memory)"
            )
        arr = np.lib.format.open_memmap(self.tmp / name, mode="w+", dtype=dtype, shape=shape)
        self._open.append(arr)
        return arr

    def commit(self, meta: dict[str, Any], labels: np.ndarray | None = None) -> Path:
        """Flush the arrays, save ``labels.npy``, write ``meta.json`` (sizes, CRC32s) and move into place."""
        for arr in self._open:
            arr.flush()
        self._open.clear()
        if labels is not None:
            np.save(self.tmp / "labels.npy", labels)
        files = {}
        for p in sorted(self.tmp.iterdir()):
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
            files[p.name] = {"size": p.stat().st_size, "crc32": _chunk_crcs(p)}
        meta = {"format": FORMAT_VERSION, "kind": self.kind, "key": self.key, **meta,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files}
        text = json.dumps(meta, indent=1)
        (self.tmp / "meta.json").write_text(text)
        self.meta = json.loads(text)
        for _ in range(3):
            try:
                os.replace(self.tmp, self.final)
                return self.final
            except OSError:  # another process committed the same key first, or a stale entry is there
                if self._keep_existing(self.meta):
                    return self.final
                shutil.rmtree(self.final, ignore_errors=True)
        raise ZooError(f"could not move the {self.kind} cache entry into {self.final}; run `zoo cache clear`")

    def _keep_existing(self, mine: dict[str, Any]) -> bool:
        """True (and this copy dropped) when another writer — a process on any host sharing the cache —
        committed a valid entry of this key with the same contents first (same parts, sizes and model
        fingerprint): readers may already hold it open, so it stays. A stale entry (other backbone weights)
        is replaced."""
        try:
            meta = _read_meta(self.final, self.kind, self.key)
        except _BadEntry:
            return False
        if any(meta.get(k) != mine.get(k) for k in _IDENTITY):
            return False
        self.abort()
        self.meta = meta
        return True

    def abort(self) -> None:
        """Delete the unfinished entry."""
        self._open.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def labels_array(y: Any) -> np.ndarray:
    """A batch of labels as stored: ``int64 [B]``."""
    return torch.as_tensor(y).reshape(-1).to(torch.int64).numpy()


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar (in images) for filling an entry; ``enabled=False`` shows nothing."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not logs.progress(enabled), leave=False,
                dynamic_ncols=True)


# ---- housekeeping -----------------------------------------------------------------------------------
def _dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def clear_cache(kind: str = "all") -> int:
    """Delete cached ``"features"``, ``"pixels"``, ``"onnx"`` (exported graphs) or ``"all"``; return the bytes freed."""
    if kind not in (*KINDS, "all"):
        raise ZooError(f"unknown cache kind {kind!r}; use features, pixels, onnx or all (zoo cache clear KIND)")
    freed = 0
    for k in KINDS if kind == "all" else (kind,):
        d = cache_root() / k
        if d.is_dir():
            freed += _dir_bytes(d)
            shutil.rmtree(d, ignore_errors=True)
    log.info("cleared %s cache under %s: %d bytes", kind, cache_root(), freed)
    return freed


def read_meta(entry: Path | None) -> dict[str, Any] | None:
    """The ``meta.json`` of the cache entry directory ``entry`` as written (unverified); None when there is no
    readable one (``entry`` None: features kept in memory)."""
    if entry is None:
        return None
    try:
        meta = json.loads((Path(entry) / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _summary_row(kind: str, entry: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": kind, "key": entry.name, "path": str(entry),
                           "size_bytes": _dir_bytes(entry), "status": "ok"}
    if entry.name.startswith(".tmp-"):
        row.update(status="incomplete", key=entry.name.split("-")[1])
        return row
    meta = read_meta(entry)
    if meta is None:
        row["status"] = "unreadable"
        return row
    try:
        parts = meta.get("parts", {})
        row.update(backbone=meta.get("backbone"), split=parts.get("split"),
                   weights=parts.get("weights"), n=meta.get("n"), created=meta.get("created"))
        if kind == "features":
            row.update(dim=meta.get("dim"), precision=meta.get("precision"))
        elif kind == "onnx":
            row.update(image_size=parts.get("input_shape", [None])[1:], opset=parts.get("opset"))
        else:
            row.update(image_size=meta.get("shape", [None] * 4)[2:])
    except AttributeError:
        row["status"] = "unreadable"
    return row


def cache_summary() -> list[dict[str, Any]]:
    """One dict per cache entry: kind, key, backbone, split, n, dim (or image size), bytes, created."""
    rows = []
    for kind in KINDS:
        d = cache_root() / kind
        if d.is_dir():
            rows += [_summary_row(kind, entry) for entry in sorted(d.iterdir()) if entry.is_dir()]
    return rows
