"""Feature extraction: run the frozen backbone once over a split, stream its features into the cache.

One path for one process and for ``torchrun``: a single process is rank 0 of a world of size 1, whose
shard is the whole dataset, whose shard buffer is the output itself and whose gather is a no-op.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from .. import data
from ..backbones.adapter import BackboneAdapter, DataConfig
from ..distributed import DistContext, all_gather_rows, shard_range
from ..errors import DataError, ZooError
from .keys import FeatureKey, model_fingerprint
from .passes import INT8, inference_setup
from .pixels import PixelCache
from .policy import candidate_passes, choose_pass_once
from .store import EntryWriter, entry_dir, labels_array, open_entry, progress_bar, read_meta

log = logging.getLogger(__name__)

Batches = Iterable[tuple[torch.Tensor, Any]]  # (uint8 images [B, 3, H, W], labels [B]) in dataset order


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


@dataclass
class _Shard:
    """What one rank extracted: its rows (world size 1: all rows, maybe the entry's memory map)."""

    features: np.ndarray | None  # [rows, D] float32; None for a rank with no rows
    labels: np.ndarray  # [rows] int64
    dim: int
    precision: str  # the precision of the pass that ran
    seconds: float
    pass_name: str = ""  # the pass that ran (ForwardPass.name: "int8", "fp32+bnfold", …)
    pass_check: list[dict[str, Any]] | None = None  # the check's verdicts (criterion.PassCheck.record)


def extraction_speed(features: FeatureSet) -> float | None:
    """Images/s of the extraction that made ``features``, from its cache entry's ``meta.json`` (None for
    features kept in memory, or an entry that does not say)."""
    meta = read_meta(features.path)
    try:
        seconds = float(meta["seconds"])  # type: ignore[index]
        return round(int(meta["n"]) / seconds, 1) if seconds > 0 else None  # type: ignore[index]
    except (TypeError, ValueError, KeyError):
        return None


def open_features(key: str, model_fp: str) -> FeatureSet | None:
    """The verified feature entry ``key`` when it exists and was made by backbone weights ``model_fp``."""
    entry = entry_dir("features", key)
    found = open_entry(entry, "features", key, lambda meta: {
        "features.npy": ((int(meta["n"]), int(meta["dim"])), "float32", True),
        "labels.npy": ((int(meta["n"]),), "int64", False)})
    if found is None:
        return None
    meta, arrays = found
    if meta.get("model_fingerprint") != model_fp:
        log.info("feature cache %s was made with other backbone weights; recomputing", entry)
        return None
    feats = arrays["features.npy"]
    log.info("feature cache hit: %s (%d × %d)", entry, *feats.shape)
    return FeatureSet(torch.from_numpy(feats), torch.from_numpy(arrays["labels.npy"]), from_cache=True, path=entry)


def extract_features(model: nn.Module, adapter: BackboneAdapter, dataset: Dataset | None,
                     data_config: DataConfig, *, key: str | None = None, batch_size: int = 64,
                     device: str | torch.device = "cpu", precision: str = "auto", num_workers: int | None = None,
                     progress: bool = True, pixels: PixelCache | None = None,
                     ctx: DistContext | None = None,
                     transform: Callable[[Any], torch.Tensor] | None = None) -> FeatureSet:
    """Pooled pre-head features of every item of ``dataset`` (raw ``(PIL image, label)`` items).

    The backbone runs once in eval mode under ``torch.inference_mode`` with channels-last inputs and
    autocast per ``precision`` (``auto``: :func:`~zoo_core.runtime.resolve_precision`, then checked
    against fp32 on the first batch; see :mod:`zoo_core.cache.policy`). Images come from
    ``transform`` (default ``eval_transform(data_config)``: PIL → ``uint8 [3, H, W]``), or from ``pixels``
    when given. With a ``key``
    (:func:`~zoo_core.cache.feature_key`) the result is read from / written to the disk cache, streamed
    batch by batch into a memory map; ``key=None`` keeps everything in memory.

    Under ``torchrun`` (``ctx`` a :class:`~zoo_core.distributed.DistContext` with several ranks) this is
    a collective call: every rank makes it with the same arguments and an identical model.

    1. Every rank looks the key up; only if *every* rank hits is the cache used as is (so a node
       without the entry — separate disks on a multi-node run — never deadlocks the others).
    2. Each rank runs the backbone once over its contiguous shard ``shard_range(N, rank, W)`` (for
       ``auto`` each checks the faster pass on its first batch; all fall back if any rank has to).
    3. The shards are all-gathered in chunks into the original order. Rank 0 streams them into the
       cache entry and commits it; ranks that can see rank 0's cache directory (same machine or a
       shared file system) open the committed entry after a barrier, the others keep a private copy.
       Every rank returns all ``N`` features.
    """
    ctx = ctx if ctx is not None else DistContext()
    dev = torch.device(device)
    model_fp = model_fingerprint(model, adapter) if key is not None else ""
    hit = open_features(str(key), model_fp) if key is not None else None
    if ctx.all_true(hit is not None):
        return hit  # type: ignore[return-value]
    n = _source_length(dataset, pixels, data_config)
    rows = shard_range(n, ctx.rank, ctx.world_size)
    batches = _batches(dataset, pixels, rows, n, transform or data.eval_transform(data_config), batch_size,
                       num_workers, dev)
    writer = _writer(key) if ctx.is_main and key is not None and hit is None else None
    name = (key.parts.get("backbone") if isinstance(key, FeatureKey) else None) or type(model).__name__
    desc = f"features {name}" + (f" (shard {ctx.rank})" if ctx.enabled else "")
    # one process streams straight into the output (the entry's memory map); a rank into a shard buffer
    alloc = partial(_buffer, writer, n) if not ctx.enabled else partial(_buffer, None, len(rows))
    try:
        with inference_setup(model, dev), progress_bar(len(rows), desc, progress) as bar:
            shard = _run_shard(model, adapter, dev, precision, data_config, batches, rows, ctx, bar.update, alloc,
                               n_images=n, state=f"{model_fp}@{dev}" if model_fp else "")
        feats, labels = _gather(ctx, shard, n, writer, want=hit is None)
        if ctx.is_main:
            log.info("extracted %d × %d features%s in %.1fs (%.1f img/s, %s, %s)", n, shard.dim,
                     f" on {ctx.world_size} ranks" if ctx.enabled else "", shard.seconds,
                     n / max(shard.seconds, 1e-9), shard.pass_name, dev)
        if writer is not None:
            feats = _commit(writer, key, shard, labels, model_fp, dev, ctx)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    ctx.barrier()  # the entry is in place before any rank goes on
    if hit is not None:
        return hit
    if feats is not None:
        path = writer.final if writer is not None else None
        return FeatureSet(torch.from_numpy(feats), torch.from_numpy(labels), from_cache=False, path=path)
    opened = open_features(str(key), model_fp)  # rank 0's committed entry, on a shared cache directory
    if opened is None:  # rank 0's entry vanished (e.g. cleared meanwhile): recompute here, alone
        log.warning("rank %d cannot read the feature cache entry rank 0 wrote (%s); extracting locally",
                    ctx.rank, entry_dir("features", str(key)))
        return extract_features(model, adapter, dataset, data_config, key=None, batch_size=batch_size, device=dev,
                                precision=precision if shard.precision == INT8 else shard.precision,
                                num_workers=num_workers, progress=False, pixels=pixels, transform=transform)
    return FeatureSet(opened.features, opened.labels, from_cache=False, path=opened.path)


def _writer(key: Any) -> EntryWriter | None:
    """A writer of the entry ``key``; None (the features stay in memory, said once as a warning) when the
    cache folder cannot be written: read-only, not a folder, no permission."""
    try:
        return EntryWriter("features", str(key))
    except OSError as exc:
        log.warning("cannot write the feature cache in %s (%s: %s); going on without the disk cache (the same "
                    "result; set BACKBONE_ZOO_CACHE to a writable folder to keep the features)",
                    entry_dir("features", str(key)).parent, type(exc).__name__, exc.strerror or exc)
        return None


def _commit(writer: EntryWriter, key: Any, shard: _Shard, labels: np.ndarray, model_fp: str, dev: torch.device,
            ctx: DistContext) -> np.ndarray:
    """Write ``meta.json`` and move the entry into place; its features, memory-mapped from there."""
    parts = getattr(key, "parts", {})
    final = writer.commit({
        "parts": parts, "backbone": parts.get("backbone"), "n": len(labels), "dim": shard.dim, "dtype": "float32",
        "precision": shard.precision, "pass": shard.pass_name, "pass_check": shard.pass_check or [],
        "model_fingerprint": model_fp,
        "seconds": round(shard.seconds, 3),
        "device": str(dev), **({"world_size": ctx.world_size} if ctx.enabled else {})}, labels)
    shard.features = None  # drop the write map (world size 1); hand out the committed file instead
    return np.load(final / "features.npy", mmap_mode="c")


def _source_length(dataset: Dataset | None, pixels: PixelCache | None, data_config: DataConfig) -> int:
    """Number of images to extract; checks that ``pixels`` fit ``data_config`` and ``dataset``."""
    if pixels is not None:
        if not pixels.matches(data_config):
            raise ZooError(f"pixel cache {pixels.path} holds {pixels.image_size} images, not what "
                           f"{data_config.image_size} / resize {data_config.resize_size} needs")
        if dataset is not None and len(dataset) != len(pixels):  # type: ignore[arg-type]
            raise ZooError(f"pixel cache {pixels.path} has {len(pixels)} images, the dataset "
                           f"{len(dataset)}")  # type: ignore[arg-type]
        n = len(pixels)
    elif dataset is None:
        raise ZooError("extract_features needs a dataset or pixels=")
    else:
        n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError("the dataset is empty; there are no images to extract features from")
    return n


def _batches(dataset: Dataset | None, pixels: PixelCache | None, rows: range, n: int,
             transform: Callable[[Any], torch.Tensor], batch_size: int, num_workers: int | None,
             dev: torch.device) -> Batches:
    """Batches of items ``rows`` of ``pixels`` (already decoded) or of ``dataset`` (decoded here)."""
    if pixels is not None:
        return pixels.batches(batch_size, rows)
    part = dataset if len(rows) == n else Subset(dataset, rows)  # type: ignore[arg-type]
    return data.make_loader(data.Transformed(part, transform), batch_size=batch_size,
                            shuffle=False, seed=0, num_workers=num_workers, device=dev)


def _buffer(writer: EntryWriter | None, n: int, dim: int) -> np.ndarray:
    """``n`` rows of features: the entry's ``features.npy`` memory map, or memory without a writer."""
    if writer is not None:
        return writer.open_array("features.npy", (n, dim), np.float32)
    return np.empty((n, dim), dtype=np.float32)


def _run_shard(model: nn.Module, adapter: BackboneAdapter, dev: torch.device, precision: str,
               data_config: DataConfig, batches: Batches, rows: range, ctx: DistContext,
               advance: Callable[[int], Any], alloc: Callable[[int], np.ndarray], *, n_images: int,
               state: str = "") -> _Shard:
    """Run the chosen pass over this rank's batches, streaming its rows into ``alloc(D)``.

    ``n_images`` (all ranks' rows) is what decides which passes are worth trying (``pass_candidates``);
    ``state`` (the model's fingerprint and device) lets a later split reuse the pass checked on this one.
    """
    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = data.normalize(x.to(dev, non_blocking=True), data_config)
        return x.contiguous(memory_format=torch.channels_last)

    t0 = time.perf_counter()
    it = iter(batches)
    first = next(it, None)
    x0 = prepare(first[0]) if first is not None else None
    checks: list[dict[str, Any]] = []
    fwd, f0 = choose_pass_once(model, state, candidate_passes(model, adapter, dev, precision, n_images), x0, ctx,
                               str(precision).strip().lower(), checks)
    out: np.ndarray | None = None
    labels = np.empty(len(rows), dtype=np.int64)
    i = 0
    for x, y in itertools.chain([first] if first is not None else [], it):
        if x0 is not None:  # the first batch, prepared already; the check may have computed its features
            f = f0 if f0 is not None else fwd.run(x0)
            x0 = f0 = None
        else:
            f = fwd.run(prepare(x))
        f_np = f.cpu().numpy()
        if out is None:
            out = alloc(f_np.shape[1])
        b = len(f_np)
        out[i:i + b] = f_np
        labels[i:i + b] = labels_array(y)
        i += b
        advance(b)
    if i != len(rows):
        shard = f" shard {rows.start}–{rows.stop}" if ctx.enabled else ""
        raise DataError(f"the dataset{shard} yielded {i} items but has length {len(rows)}")
    dim = int(out.shape[1]) if out is not None else 0
    return _Shard(out, labels, dim, fwd.precision, time.perf_counter() - t0, fwd.name, checks)


def _gather(ctx: DistContext, shard: _Shard, n: int, writer: EntryWriter | None,
            want: bool) -> tuple[np.ndarray | None, np.ndarray]:
    """All ``n`` rows and labels in dataset order (world size 1: the shard already is all of them).

    Under ``torchrun`` rank 0 gathers into ``writer``'s memory map; another rank gets a private copy
    when it wants the rows (``want``: no cache hit of its own) and cannot see the entry rank 0 is
    writing, else ``None``. The shard's ``dim`` and ``seconds`` become the largest and the mean over
    the ranks.
    """
    if not ctx.enabled:
        return shard.features, shard.labels
    shard.dim = ctx.max_int(shard.dim)
    shard.seconds = ctx.sum([shard.seconds])[0] / ctx.world_size
    probe = ctx.broadcast_object(str(writer.tmp) if writer is not None else None)
    visible = not ctx.is_main and probe is not None and os.path.isdir(str(probe))  # rank 0's entry
    feats = _buffer(writer, n, shard.dim) if writer is not None or (want and not visible) else None
    local = shard.features if shard.features is not None else np.empty((0, shard.dim), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    all_gather_rows(ctx, local, n, feats)
    all_gather_rows(ctx, shard.labels, n, labels)
    return feats, labels
