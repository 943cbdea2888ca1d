"""The pixel cache: images decoded, resized and center-cropped once, shared by every backbone of that size."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import data
from ..backbones.adapter import DataConfig
from ..errors import DataError
from .keys import pixel_key
from .store import EntryWriter, entry_dir, labels_array, open_entry, progress_bar

log = logging.getLogger(__name__)


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
        entry = entry_dir("pixels", key, root)
        found = open_entry(entry, "pixels", key, lambda meta: {
            "pixels.npy": (tuple(meta["shape"]), "uint8", True), "labels.npy": ((int(meta["n"]),), "int64", False)})
        if found is not None:
            meta, arrays = found
            log.info("pixel cache hit: %s (%d images at %s)", entry, int(meta["n"]), data_config.image_size)
            return cls(entry, meta, arrays["labels.npy"], from_cache=True)
        writer = EntryWriter("pixels", key, root)
        try:
            labels = _decode_into(writer, key.parts, dataset, data_config, split, num_workers, progress)
        except BaseException:
            writer.abort()
            raise
        return cls(writer.final, writer.meta, labels, from_cache=False)

    def as_dataset(self) -> Dataset:
        """A dataset of ``(uint8 tensor [3, H, W], label)`` items backed by the memory map."""
        return _PixelDataset(self.path / "pixels.npy", self.labels)

    def batches(self, batch_size: int, rows: range | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Contiguous ``(uint8 [B, 3, H, W], int64 [B])`` batches of ``rows`` (default: all) in order."""
        arr, rows = self.images, rows if rows is not None else range(len(self))
        for i in range(rows.start, rows.stop, batch_size):
            j = min(i + batch_size, rows.stop)
            yield torch.from_numpy(np.array(arr[i:j])), torch.from_numpy(self.labels[i:j])


def _decode_into(writer: EntryWriter, parts: dict[str, Any], dataset: Dataset, data_config: DataConfig,
                 split: str, num_workers: int | None, show: bool) -> np.ndarray:
    """Decode ``dataset`` through ``eval_transform`` into ``writer``'s ``pixels.npy``, commit; the labels."""
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError(f"split {split!r} is empty; there is nothing to decode")
    shape = (n, data_config.input_size[0], *data_config.image_size)
    loader = data.make_loader(data.Transformed(dataset, data.eval_transform(data_config)), batch_size=64,
                              shuffle=False, seed=0, num_workers=num_workers, device="cpu")
    t0 = time.perf_counter()
    images = writer.open_array("pixels.npy", shape, np.uint8)
    labels = np.empty(n, dtype=np.int64)
    i = 0
    with progress_bar(n, f"decoding {split} at {data_config.image_size[0]}px", show) as bar:
        for x, y in loader:
            b = len(x)
            if tuple(x.shape[1:]) != shape[1:]:
                raise DataError(f"eval_transform gave images of {tuple(x.shape[1:])}, expected {shape[1:]}")
            images[i:i + b] = torch.as_tensor(x, dtype=torch.uint8).numpy()
            labels[i:i + b] = labels_array(y)
            i += b
            bar.update(b)
    if i != n:
        raise DataError(f"the {split} dataset yielded {i} images but has length {n}")
    del images
    seconds = round(time.perf_counter() - t0, 3)
    final = writer.commit({"parts": parts, "n": n, "shape": list(shape), "dtype": "uint8",
                           "seconds": seconds}, labels)
    log.info("pixel cache: decoded %d images at %s in %.1fs → %s", n, data_config.image_size, seconds, final)
    return labels
