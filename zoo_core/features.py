"""Feature cache: run a frozen backbone once, keep its pooled features on disk, train the head on them.

When no backbone stage ever trains and there is no train-time augmentation, every epoch would feed the
same images through the same frozen network. :func:`extract_features` instead runs the backbone once
(eval mode, ``torch.inference_mode``, channels-last, bf16 autocast only where that is native and fast)
and stores the ``[N, D]`` features under a key of backbone + weights + data config + dataset
fingerprint + split + precision (:func:`feature_key`). A second strategy (another head learning rate),
``zoo compare`` or a rerun with the same inputs reads them back without a single backbone forward.

:class:`PixelCache` is the shared decoding step of ``compare``: images are decoded, resized and
center-cropped once per distinct input size (``uint8`` ``[N, 3, H, W]``), and every backbone of that
size reads the same array instead of decoding the files again.

On-disk layout (root: ``$BACKBONE_ZOO_CACHE``, default ``~/.cache/backbone-zoo``)::

    features/<key>/features.npy   float32 [N, D]   pooled pre-head features (.npy, memory-mapped on read)
    features/<key>/labels.npy     int64   [N]
    features/<key>/meta.json      key parts, shape, dtype, precision, model fingerprint, CRC32 per 8 MiB
    pixels/<key>/pixels.npy       uint8   [N, 3, H, W]  decoded + resized + center-cropped images
    pixels/<key>/labels.npy       int64   [N]
    pixels/<key>/meta.json

An entry is written into a hidden sibling directory (``.tmp-<key>-…``) and renamed into place only when
complete, so a crash never leaves a half-written entry. Features are streamed into the memory map batch
by batch, so RAM stays bounded for datasets larger than memory, and read back memory-mapped. Every read
checks the sidecar (shape, dtype, file sizes, CRC32 of every chunk up to 1 GiB, a sample of chunks
beyond) and the fingerprint of the model's backbone weights; an entry that fails is logged as a warning,
deleted and rebuilt — never trusted.

Clearing the cache: ``zoo cache clear`` (everything), ``zoo cache clear features`` or ``zoo cache clear
pixels``; from Python ``zoo_core.features.clear_cache("all" | "features" | "pixels")``, which returns the
bytes freed; or delete the directories by hand (``rm -rf ~/.cache/backbone-zoo/features``) — nothing
else depends on them. ``cache_summary()`` lists the entries. Pretrained weights live in torchvision's and
timm's own caches (``$TORCH_HOME``, the Hugging Face hub) and are never touched by ``clear_cache``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .adapter import BackboneAdapter, DataConfig
from .distributed import DistContext, all_gather_rows, shard_range
from .errors import DataError, ZooError
from .runtime import autocast, relative_error, resolve_precision
from .util import digest

log = logging.getLogger("zoo_core.features")

FORMAT_VERSION = 1
KINDS = ("features", "pixels")  # sub-directories of cache_root(), one per kind of entry
_CHUNK = 8 << 20  # bytes covered by one CRC32 in meta.json
_FULL_VERIFY_BYTES = 1 << 30  # files up to this size have every chunk verified on read
_SAMPLED_CHUNKS = 64  # chunks verified (plus first and last) for larger files
_AUTO_BF16_TOLERANCE = 0.05  # max relative L2 error of bf16 vs fp32 features accepted by "auto"
_file_hashes: dict[tuple[str, int, int, int], str] = {}  # (path, size, mtime_ns, inode) → sha256


def cache_root() -> Path:
    """Root of the feature and pixel caches: ``$BACKBONE_ZOO_CACHE`` or ``~/.cache/backbone-zoo``."""
    env = os.environ.get("BACKBONE_ZOO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "backbone-zoo"


@dataclass
class FeatureSet:
    """Pooled features of one dataset split and their labels, as the head sees them."""

    features: torch.Tensor  # [N, D] float32, possibly memory-mapped from the cache file
    labels: torch.Tensor  # [N] int64
    from_cache: bool
    path: Path | None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension ``D``."""
        return int(self.features.shape[1])


class FeatureKey(str):
    """A cache key (hex digest) that remembers the parts it was made from, for ``meta.json``."""

    parts: dict[str, Any]

    def __new__(cls, digest: str, parts: dict[str, Any]) -> FeatureKey:
        obj = super().__new__(cls, digest)
        obj.parts = parts
        return obj


# ---- keys -----------------------------------------------------------------------------------------
def _file_sha256(path: Path) -> str:
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if memo not in _file_hashes:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _file_hashes[memo] = h.hexdigest()
    return _file_hashes[memo]


def weights_identity(weights: object, backbone: str | None = None) -> Any:
    """What identifies ``weights`` in a cache key: ``None``, a weight tag, or a local file's content.

    ``"DEFAULT"`` is resolved to the concrete tag the backbone's plugin would load (so a library
    upgrade that changes the default misses the cache); a local checkpoint is identified by its
    SHA-256 (memoised per path, size and mtime), so overwriting the file misses the cache.
    """
    if weights is None or (isinstance(weights, str) and weights.strip().lower() in ("", "none", "null")):
        return None
    from .weights import is_local_path

    if is_local_path(weights):
        path = Path(os.fspath(weights)).expanduser().resolve()  # type: ignore[arg-type]
        if path.is_file():
            return {"file": path.name, "sha256": _file_sha256(path)}
        return {"file": str(path), "missing": True}
    tag = str(weights)
    if tag == "DEFAULT" and backbone:
        try:
            from .registry import get_adapter

            available = get_adapter(backbone)[0].available_weights(backbone)
            if available:
                return f"DEFAULT={available[0]}"
        except Exception:  # noqa: BLE001 - the key stays "DEFAULT"; creating the model reports errors
            pass
    return tag


def feature_key(*, backbone: str, weights: str | os.PathLike | None, data_config: DataConfig,
                fingerprint: str, split: str, precision: str) -> FeatureKey:
    """Cache key (hex digest, a ``str``) of one backbone's features on one dataset split.

    :param weights: ``"DEFAULT"``, ``None``/``"None"``, a weight tag, or a local checkpoint path (its
        contents are hashed, so an overwritten file misses).
    :param precision: the *resolved* precision (``resolve_precision(...)``), not ``"auto"``.
    """
    import torchvision

    parts = {
        "format": FORMAT_VERSION, "kind": "features", "backbone": backbone,
        "weights": weights_identity(weights, backbone), "data_config": data_config.to_dict(),
        "fingerprint": str(fingerprint), "split": str(split), "precision": str(precision),
        "torch": torch.__version__.split("+")[0], "torchvision": torchvision.__version__.split("+")[0],
    }
    return FeatureKey(digest(parts), parts)


def pixel_key(*, fingerprint: str, split: str, data_config: DataConfig) -> FeatureKey:
    """Cache key of decoded pixels: dataset fingerprint, split, resize size, input size, interpolation."""
    import PIL
    import torchvision

    parts = {
        "format": FORMAT_VERSION, "kind": "pixels", "fingerprint": str(fingerprint), "split": str(split),
        "resize_size": data_config.resize_size, "image_size": list(data_config.image_size),
        "channels": data_config.input_size[0], "interpolation": data_config.interpolation,
        "torchvision": torchvision.__version__.split("+")[0], "pillow": PIL.__version__,
    }
    return FeatureKey(digest(parts), parts)


def model_fingerprint(model: nn.Module, adapter: BackboneAdapter | None = None) -> str:
    """Hash of the backbone's state (every parameter and buffer except the head's).

    Stored with each feature entry and compared on read, so features made by other weights (a
    different random init, a retrained checkpoint under the same name) are never served.
    """
    head = adapter.head_name(model) if adapter is not None else ""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in model.state_dict().items():
        if head and (name == head or name.startswith(head + ".")):
            continue
        t = t.detach()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if t.device.type == "meta" or t.numel() == 0:
            continue
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


# ---- on-disk entries -------------------------------------------------------------------------------
class _BadEntry(Exception):
    """A cache entry that exists but cannot be trusted."""


def _entry_dir(kind: str, key: str, root: Path | None = None) -> Path:
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


def _discard(entry: Path, kind: str, reason: str) -> None:
    log.warning("%s cache entry %s is corrupt (%s); deleting it and rebuilding", kind, entry, reason)
    shutil.rmtree(entry, ignore_errors=True)


def _dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


class _EntryWriter:
    """Builds one entry in a hidden temp dir; :meth:`commit` renames it into place atomically."""

    def __init__(self, kind: str, key: str, root: Path | None = None) -> None:
        self.kind, self.key = kind, key
        self.final = _entry_dir(kind, key, root)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.parent / f".tmp-{key}-{os.getpid()}-{secrets.token_hex(4)}"
        self.tmp.mkdir()

    def open_array(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.memmap:
        need = int(np.prod(shape)) * np.dtype(dtype).itemsize
        free = shutil.disk_usage(self.tmp).free
        if need + (64 << 20) > free:
            raise DataError(
                f"not enough free disk space for the {self.kind} cache in {self.tmp.parent} "
                f"({need / 2**30:.2f} GiB needed, {free / 2**30:.2f} GiB free): free space, point "
                "BACKBONE_ZOO_CACHE at a larger disk, run `zoo cache clear`, or turn the cache off"
            )
        return np.lib.format.open_memmap(self.tmp / name, mode="w+", dtype=dtype, shape=shape)

    def commit(self, meta: dict[str, Any]) -> Path:
        files = {}
        for p in sorted(self.tmp.iterdir()):
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
            files[p.name] = {"size": p.stat().st_size, "crc32": _chunk_crcs(p)}
        meta = {"format": FORMAT_VERSION, "kind": self.kind, "key": self.key, **meta,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files}
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        for _ in range(3):
            try:
                os.replace(self.tmp, self.final)
                return self.final
            except OSError:  # another process committed the same key first, or a stale entry is there
                shutil.rmtree(self.final, ignore_errors=True)
        raise ZooError(f"could not move the {self.kind} cache entry into {self.final}; run `zoo cache clear`")

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False, dynamic_ncols=True)


def _labels_tensor(y: Any) -> np.ndarray:
    return torch.as_tensor(y).reshape(-1).to(torch.int64).numpy()


# ---- shared decoding ------------------------------------------------------------------------------
class _PixelDataset(Dataset):
    """Items ``(uint8 tensor [3, H, W], label)`` read from a :class:`PixelCache` memory map."""

    def __init__(self, path: Path, labels: np.ndarray) -> None:
        self.path, self.labels = path, labels
        self._arr: np.ndarray | None = None

    def _images(self) -> np.ndarray:
        if self._arr is None:  # opened lazily, so DataLoader workers each map the file themselves
            self._arr = np.load(self.path, mmap_mode="r")
        return self._arr

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arr": None}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self._images()[i])), int(self.labels[i])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        order = np.argsort(indices)
        block = np.array(self._images()[np.asarray(indices)[order]])  # one sorted read
        out: list[tuple[torch.Tensor, int]] = [None] * len(indices)  # type: ignore[list-item]
        for j, pos in enumerate(order):
            out[pos] = (torch.from_numpy(block[j]), int(self.labels[indices[pos]]))
        return out


class PixelCache:
    """Decoded, resized and center-cropped ``uint8`` images of one dataset split at one input size.

    Built once per (dataset fingerprint, split, resize size, input size, interpolation) and shared by
    every backbone with that preprocessing: ``compare`` decodes the files once per distinct input size.
    """

    def __init__(self, path: Path, meta: dict[str, Any], labels: np.ndarray, *, from_cache: bool) -> None:
        self.path, self.meta, self.labels, self.from_cache = path, meta, labels, from_cache
        self._arr: np.ndarray | None = None

    @property
    def key(self) -> str:
        """Cache key of this entry."""
        return str(self.meta["key"])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the stored images."""
        return (int(self.meta["shape"][2]), int(self.meta["shape"][3]))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> np.ndarray:
        """The ``[N, 3, H, W]`` uint8 memory map."""
        if self._arr is None:
            self._arr = np.load(self.path / "pixels.npy", mmap_mode="r")
        return self._arr

    def matches(self, data_config: DataConfig) -> bool:
        """True when these pixels are what ``eval_transform(data_config)`` produces."""
        parts = self.meta.get("parts", {})
        return (tuple(parts.get("image_size", ())) == tuple(data_config.image_size)
                and parts.get("resize_size") == data_config.resize_size
                and parts.get("interpolation") == data_config.interpolation)

    @classmethod
    def build(cls, dataset: Dataset, data_config: DataConfig, *, fingerprint: str, split: str,
              root: Path | None = None, num_workers: int | None = None, progress: bool = True) -> PixelCache:
        """Return the cached pixels of ``dataset`` at ``data_config``'s size, decoding them if needed."""
        key = pixel_key(fingerprint=fingerprint, split=split, data_config=data_config)
        entry = _entry_dir("pixels", key, root)
        if entry.is_dir():
            try:
                meta = _read_meta(entry, "pixels", key)
                n = int(meta["n"])
                _load_array(entry / "pixels.npy", tuple(meta["shape"]), "uint8", mmap=True)
                labels = _load_array(entry / "labels.npy", (n,), "int64", mmap=False)
                log.info("pixel cache hit: %s (%d images at %s)", entry, n, data_config.image_size)
                return cls(entry, meta, labels, from_cache=True)
            except (_BadEntry, KeyError, TypeError, ValueError) as exc:
                _discard(entry, "pixel", str(exc))
        from . import data

        n = len(dataset)  # type: ignore[arg-type]
        if n == 0:
            raise DataError(f"split {split!r} is empty; there is nothing to decode")
        shape = (n, data_config.input_size[0], *data_config.image_size)
        loader = data.make_loader(data.Transformed(dataset, data.eval_transform(data_config)), batch_size=64,
                                  shuffle=False, seed=0, num_workers=num_workers, device="cpu")
        writer = _EntryWriter("pixels", key, root)
        t0 = time.perf_counter()
        try:
            images = writer.open_array("pixels.npy", shape, np.uint8)
            labels = np.empty(n, dtype=np.int64)
            i = 0
            with _progress(n, f"decoding {split} at {data_config.image_size[0]}px", progress) as bar:
                for x, y in loader:
                    b = len(x)
                    if tuple(x.shape[1:]) != shape[1:]:
                        raise DataError(f"eval_transform gave images of {tuple(x.shape[1:])}, expected {shape[1:]}")
                    images[i:i + b] = torch.as_tensor(x, dtype=torch.uint8).numpy()
                    labels[i:i + b] = _labels_tensor(y)
                    i += b
                    bar.update(b)
            if i != n:
                raise DataError(f"the {split} dataset yielded {i} images but has length {n}")
            images.flush()
            del images
            np.save(writer.tmp / "labels.npy", labels)
            meta = {"parts": key.parts, "n": n, "shape": list(shape), "dtype": "uint8",
                    "seconds": round(time.perf_counter() - t0, 3)}
            final = writer.commit(meta)
        except BaseException:
            writer.abort()
            raise
        log.info("pixel cache: decoded %d images at %s in %.1fs → %s", n, data_config.image_size,
                 meta["seconds"], final)
        return cls(final, _read_meta(final, "pixels", key), labels, from_cache=False)

    def as_dataset(self) -> Dataset:
        """A dataset of ``(uint8 tensor [3, H, W], label)`` items backed by the memory map."""
        return _PixelDataset(self.path / "pixels.npy", self.labels)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Contiguous ``(uint8 [B, 3, H, W], int64 [B])`` batches in dataset order."""
        arr = self.images
        for i in range(0, len(self), batch_size):
            yield torch.from_numpy(np.array(arr[i:i + batch_size])), torch.from_numpy(self.labels[i:i + batch_size])


# ---- feature extraction -----------------------------------------------------------------------------
def _open_features(entry: Path, key: str, model_fp: str) -> FeatureSet | None:
    if not entry.is_dir():
        return None
    try:
        meta = _read_meta(entry, "features", key)
        n, d = int(meta["n"]), int(meta["dim"])
        feats = _load_array(entry / "features.npy", (n, d), "float32", mmap=True)
        labels = _load_array(entry / "labels.npy", (n,), "int64", mmap=False)
    except (_BadEntry, KeyError, TypeError, ValueError) as exc:
        _discard(entry, "feature", str(exc))
        return None
    if meta.get("model_fingerprint") != model_fp:
        log.info("feature cache %s was made with other backbone weights; recomputing", entry)
        return None
    log.info("feature cache hit: %s (%d × %d)", entry, n, d)
    return FeatureSet(torch.from_numpy(feats), torch.from_numpy(labels), from_cache=True, path=entry)


@contextlib.contextmanager
def _inference_setup(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode + channels-last weights for the duration; the model's mode and layout are restored."""
    was_training = model.training
    four_d = [p for p in model.parameters() if p.dim() == 4]
    was_cl = bool(four_d) and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)
    model.to(device)
    model.eval()
    if four_d and not was_cl:
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if four_d and not was_cl:
            model.to(memory_format=torch.contiguous_format)
        model.train(was_training)


def _check_auto_bf16(model: nn.Module, adapter: BackboneAdapter, x: torch.Tensor, device: torch.device,
                     precision: str) -> str:
    """For ``auto``: keep bf16 only if it matches fp32 on this first batch within tolerance."""
    with torch.inference_mode():
        exact = adapter.features(model, x).float()
        with autocast(device, precision):
            low = adapter.features(model, x).float()
    err = relative_error(low, exact)
    if not torch.isfinite(low).all() or err > _AUTO_BF16_TOLERANCE:
        log.warning("precision auto: %s features differ from fp32 by %.3g (relative); using fp32",
                    precision, err)
        return "fp32"
    log.info("precision auto: %s features within %.3g of fp32 on the first batch", precision, err)
    return precision


def extract_features(model: nn.Module, adapter: BackboneAdapter, dataset: Dataset | None,
                     data_config: DataConfig, *, key: str | None = None, batch_size: int = 64,
                     device: str | torch.device = "cpu", precision: str = "auto", num_workers: int | None = None,
                     progress: bool = True, pixels: PixelCache | None = None,
                     ctx: DistContext | None = None) -> FeatureSet:
    """Pooled pre-head features of every item of ``dataset`` (raw ``(PIL image, label)`` items).

    The backbone runs once in eval mode under ``torch.inference_mode`` with channels-last inputs and
    autocast per ``precision`` (``auto``: :func:`resolve_precision`, then checked against fp32 on the
    first batch). Images come from ``eval_transform(data_config)``, or from ``pixels`` when given.
    With a ``key`` (:func:`feature_key`) the result is read from / written to the disk cache, streamed
    batch by batch into a memory map; ``key=None`` keeps everything in memory.

    Under ``torchrun`` (``ctx`` a :class:`~zoo_core.distributed.DistContext` with several ranks) every
    rank extracts one contiguous shard once, the shards are gathered in the original order, rank 0
    alone writes the cache entry and every rank returns all ``N`` features (see :func:`_extract_sharded`).
    It is a collective call: every rank must make it, with the same arguments.
    """
    from . import data

    dev = torch.device(device)
    if ctx is not None and ctx.enabled:
        return _extract_sharded(model, adapter, dataset, data_config, key=key, batch_size=batch_size, dev=dev,
                                precision=precision, num_workers=num_workers, progress=progress, pixels=pixels,
                                ctx=ctx)
    requested = str(precision).strip().lower()
    prec = resolve_precision(precision, dev)
    entry = _entry_dir("features", key) if key is not None else None
    model_fp = model_fingerprint(model, adapter) if key is not None else ""
    if entry is not None and key is not None:
        hit = _open_features(entry, str(key), model_fp)
        if hit is not None:
            return hit

    if pixels is not None:
        if not pixels.matches(data_config):
            raise ZooError(f"pixel cache {pixels.path} holds {pixels.image_size} images, not what "
                           f"{data_config.image_size} / resize {data_config.resize_size} needs")
        if dataset is not None and len(dataset) != len(pixels):  # type: ignore[arg-type]
            raise ZooError(f"pixel cache {pixels.path} has {len(pixels)} images, the dataset "
                           f"{len(dataset)}")  # type: ignore[arg-type]
        n = len(pixels)
        batches: Any = pixels.batches(batch_size)
    else:
        if dataset is None:
            raise ZooError("extract_features needs a dataset or pixels=")
        n = len(dataset)  # type: ignore[arg-type]
        batches = data.make_loader(data.Transformed(dataset, data.eval_transform(data_config)),
                                   batch_size=batch_size, shuffle=False, seed=0, num_workers=num_workers,
                                   device=dev)
    if n == 0:
        raise DataError("the dataset is empty; there are no images to extract features from")

    writer = _EntryWriter("features", str(key)) if key is not None else None
    feats: np.ndarray | None = None
    labels = np.empty(n, dtype=np.int64)
    t0 = time.perf_counter()
    name = (key.parts.get("backbone") if isinstance(key, FeatureKey) else None) or type(model).__name__
    try:
        with _inference_setup(model, dev), _progress(n, f"features {name}", progress) as bar:
            i = 0
            for x, y in batches:
                x = data.normalize(x.to(dev, non_blocking=True), data_config)
                x = x.contiguous(memory_format=torch.channels_last)
                if i == 0 and requested == "auto" and prec != "fp32":
                    prec = _check_auto_bf16(model, adapter, x, dev, prec)
                with torch.inference_mode(), autocast(dev, prec):
                    f = adapter.features(model, x).float()
                f_np = f.cpu().numpy()
                if feats is None:
                    shape = (n, int(f_np.shape[1]))
                    feats = (writer.open_array("features.npy", shape, np.float32) if writer
                             else np.empty(shape, dtype=np.float32))
                b = len(f_np)
                feats[i:i + b] = f_np
                labels[i:i + b] = _labels_tensor(y)
                i += b
                bar.update(b)
        if i != n or feats is None:
            raise DataError(f"the dataset yielded {i} items but has length {n}")
        seconds = time.perf_counter() - t0
        log.info("extracted %d × %d features in %.1fs (%.1f img/s, %s, %s)", n, feats.shape[1], seconds,
                 n / seconds, prec, dev)
        if writer is None:
            return FeatureSet(torch.from_numpy(feats), torch.from_numpy(labels), from_cache=False, path=None)
        dim = int(feats.shape[1])
        feats.flush()  # type: ignore[union-attr]
        del feats
        np.save(writer.tmp / "labels.npy", labels)
        parts = getattr(key, "parts", {})
        meta = {"parts": parts, "backbone": parts.get("backbone"), "n": n, "dim": dim, "dtype": "float32",
                "precision": prec, "model_fingerprint": model_fp, "seconds": round(seconds, 3),
                "device": str(dev)}
        final = writer.commit(meta)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    arr = np.load(final / "features.npy", mmap_mode="c")
    return FeatureSet(torch.from_numpy(arr), torch.from_numpy(labels), from_cache=False, path=final)


def _shard_batches(dataset: Dataset | None, pixels: PixelCache | None, rows: range, data_config: DataConfig,
                   batch_size: int, num_workers: int | None, dev: torch.device) -> Any:
    """Batches ``(uint8 images, labels)`` of items ``rows`` of ``pixels`` or ``dataset``, in order."""
    from torch.utils.data import Subset

    from . import data

    if pixels is not None:
        arr, labels = pixels.images, pixels.labels

        def gen() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for i in range(rows.start, rows.stop, batch_size):
                j = min(i + batch_size, rows.stop)
                yield torch.from_numpy(np.array(arr[i:j])), torch.from_numpy(np.array(labels[i:j]))

        return gen()
    shard = data.Transformed(Subset(dataset, rows), data.eval_transform(data_config))  # type: ignore[arg-type]
    return data.make_loader(shard, batch_size=batch_size, shuffle=False, seed=0, num_workers=num_workers,
                            device=dev)


def _extract_sharded(model: nn.Module, adapter: BackboneAdapter, dataset: Dataset | None,
                     data_config: DataConfig, *, key: str | None, batch_size: int, dev: torch.device,
                     precision: str, num_workers: int | None, progress: bool, pixels: PixelCache | None,
                     ctx: DistContext) -> FeatureSet:
    """:func:`extract_features` on several ranks: each extracts ``shard_range(N, rank, W)`` once.

    1. Every rank looks the key up; only if *every* rank hits is the cache used as is (so a node
       without the entry — separate disks on a multi-node run — never deadlocks the others).
    2. Each rank runs the backbone over its contiguous shard (``precision="auto"``: each checks bf16
       against fp32 on its first batch, and all ranks fall back to fp32 if any rank has to).
    3. The shards are all-gathered in chunks into the original order. Rank 0 streams them into the
       cache entry and commits it; ranks that can see rank 0's cache directory (same machine or a
       shared file system) open the committed entry after a barrier, the others keep a private copy.
    The model must be identical on every rank (the trainer broadcasts rank 0's weights first).
    """
    requested = str(precision).strip().lower()
    prec = resolve_precision(precision, dev)
    entry = _entry_dir("features", key) if key is not None else None
    model_fp = model_fingerprint(model, adapter) if key is not None else ""
    hit = _open_features(entry, str(key), model_fp) if entry is not None and key is not None else None
    if ctx.all_true(hit is not None):
        return hit  # type: ignore[return-value]

    if pixels is not None:
        if not pixels.matches(data_config):
            raise ZooError(f"pixel cache {pixels.path} holds {pixels.image_size} images, not what "
                           f"{data_config.image_size} / resize {data_config.resize_size} needs")
        n = len(pixels)
    elif dataset is None:
        raise ZooError("extract_features needs a dataset or pixels=")
    else:
        n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError("the dataset is empty; there are no images to extract features from")
    rows = shard_range(n, ctx.rank, ctx.world_size)
    batches = iter(_shard_batches(dataset, pixels, rows, data_config, batch_size, num_workers, dev))
    from . import data

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = data.normalize(x.to(dev, non_blocking=True), data_config)
        return x.contiguous(memory_format=torch.channels_last)

    t0 = time.perf_counter()
    name = (key.parts.get("backbone") if isinstance(key, FeatureKey) else None) or type(model).__name__
    parts: list[np.ndarray] = []
    local_labels = np.empty(len(rows), dtype=np.int64)
    with _inference_setup(model, dev), _progress(len(rows), f"features {name} (shard {ctx.rank})",
                                                 progress) as bar:
        first = next(batches, None)
        if requested == "auto" and prec != "fp32":
            ok = first is None or _check_auto_bf16(model, adapter, prepare(first[0]), dev, prec) == prec
            prec = prec if ctx.all_true(ok) else "fp32"
        i = 0
        for x, y in _chain([first] if first is not None else [], batches):
            with torch.inference_mode(), autocast(dev, prec):
                f = adapter.features(model, prepare(x)).float()
            parts.append(f.cpu().numpy())
            b = len(parts[-1])
            local_labels[i:i + b] = _labels_tensor(y)
            i += b
            bar.update(b)
    if i != len(rows):
        raise DataError(f"the dataset shard {rows.start}–{rows.stop} yielded {i} items but has {len(rows)}")
    dim = ctx.max_int(int(parts[0].shape[1]) if parts else 0)
    local = np.concatenate(parts) if parts else np.empty((0, dim), dtype=np.float32)
    seconds = time.perf_counter() - t0

    writer = _EntryWriter("features", str(key)) if ctx.is_main and key is not None and hit is None else None
    try:
        probe = ctx.broadcast_object(str(writer.tmp) if writer is not None else None)
        visible = not ctx.is_main and probe is not None and os.path.isdir(str(probe))  # rank 0's entry
        if writer is not None:
            feats: np.ndarray | None = writer.open_array("features.npy", (n, dim), np.float32)
        elif hit is None and not visible:  # no cache (key=None), or a rank on a node of its own
            feats = np.empty((n, dim), dtype=np.float32)
        else:
            feats = None
        labels = np.empty(n, dtype=np.int64)
        all_gather_rows(ctx, local, n, feats)
        all_gather_rows(ctx, local_labels, n, labels)
        seconds = ctx.sum([seconds])[0] / ctx.world_size
        if writer is not None:
            feats.flush()  # type: ignore[union-attr]
            del feats
            feats = None
            np.save(writer.tmp / "labels.npy", labels)
            parts_ = getattr(key, "parts", {})
            meta = {"parts": parts_, "backbone": parts_.get("backbone"), "n": n, "dim": dim, "dtype": "float32",
                    "precision": prec, "model_fingerprint": model_fp, "seconds": round(seconds, 3),
                    "device": str(dev), "world_size": ctx.world_size}
            final = writer.commit(meta)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if ctx.is_main:
        log.info("extracted %d × %d features on %d ranks in %.1fs (%s, %s)", n, dim, ctx.world_size, seconds,
                 prec, dev)
    ctx.barrier()  # the entry is in place before any rank goes on
    if hit is not None:
        return hit
    if writer is not None:
        arr = np.load(final / "features.npy", mmap_mode="c")
        return FeatureSet(torch.from_numpy(arr), torch.from_numpy(labels), from_cache=False, path=final)
    if feats is not None:
        return FeatureSet(torch.from_numpy(feats), torch.from_numpy(labels), from_cache=False, path=None)
    opened = _open_features(entry, str(key), model_fp) if entry is not None and key is not None else None
    if opened is None:  # rank 0's entry vanished (e.g. cleared meanwhile): recompute here, alone
        log.warning("rank %d cannot read the feature cache entry rank 0 wrote (%s); extracting locally",
                    ctx.rank, entry)
        return extract_features(model, adapter, dataset, data_config, key=None, batch_size=batch_size,
                                device=dev, precision=prec, num_workers=num_workers, progress=False,
                                pixels=pixels)
    return FeatureSet(opened.features, opened.labels, from_cache=False, path=opened.path)


def _chain(first: list[Any], rest: Iterator[Any]) -> Iterator[Any]:
    yield from first
    yield from rest


# ---- housekeeping -----------------------------------------------------------------------------------
def clear_cache(kind: str = "all") -> int:
    """Delete cached ``"features"``, ``"pixels"`` or ``"all"`` (both); return the bytes freed."""
    if kind not in (*KINDS, "all"):
        raise ZooError(f"unknown cache kind {kind!r}; use features, pixels or all (zoo cache clear KIND)")
    freed = 0
    for k in KINDS if kind == "all" else (kind,):
        d = cache_root() / k
        if d.is_dir():
            freed += _dir_bytes(d)
            shutil.rmtree(d, ignore_errors=True)
    log.info("cleared %s cache under %s: %d bytes", kind, cache_root(), freed)
    return freed


def cache_summary() -> list[dict[str, Any]]:
    """One dict per cache entry: kind, key, backbone, split, n, dim (or image size), bytes, created."""
    rows = []
    for kind in KINDS:
        d = cache_root() / kind
        if not d.is_dir():
            continue
        for entry in sorted(d.iterdir()):
            if not entry.is_dir():
                continue
            row: dict[str, Any] = {"kind": kind, "key": entry.name, "path": str(entry),
                                   "size_bytes": _dir_bytes(entry), "status": "ok"}
            if entry.name.startswith(".tmp-"):
                row.update(status="incomplete", key=entry.name.split("-")[1])
                rows.append(row)
                continue
            try:
                meta = json.loads((entry / "meta.json").read_text())
                parts = meta.get("parts", {})
                row.update(backbone=meta.get("backbone"), split=parts.get("split"),
                           weights=parts.get("weights"), n=meta.get("n"), created=meta.get("created"))
                if kind == "features":
                    row.update(dim=meta.get("dim"), precision=meta.get("precision"))
                else:
                    row.update(image_size=meta.get("shape", [None] * 4)[2:])
            except (OSError, ValueError, AttributeError):
                row["status"] = "unreadable"
            rows.append(row)
    return rows
