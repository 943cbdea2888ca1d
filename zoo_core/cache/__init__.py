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

Modules: :mod:`.keys` (cache root and keys), :mod:`.store` (the checksummed entry store, clearing,
listing and reading an entry's ``meta.json``), :mod:`.pixels` (the pixel cache), :mod:`.passes` (the
forward passes the backbone can run in), :mod:`.policy` (which passes to try and the check of a faster
pass against fp32), :mod:`.extract` (feature extraction, one process or ``torchrun``), :mod:`.service`
(a run's features of one split, :func:`split_features`: what the trainer, the probe, compare and rank ask).

On-disk layout (root: ``$BACKBONE_ZOO_CACHE``, default ``~/.cache/backbone-zoo``)::

    features/<key>/features.npy   float32 [N, D]   pooled pre-head features (.npy, memory-mapped on read)
    features/<key>/labels.npy     int64   [N]
    features/<key>/meta.json      key parts, shape, dtype, precision, model fingerprint, CRC32 per 8 MiB
    pixels/<key>/pixels.npy       uint8   [N, 3, H, W]  decoded + resized + center-cropped images
    pixels/<key>/labels.npy       int64   [N]
    pixels/<key>/meta.json
    onnx/<key>/float.onnx(.data)  the backbone's features graph exported to ONNX (the ONNX Runtime passes)
    onnx/<key>/meta.json

An entry is written into a hidden sibling directory (``.tmp-<key>-…``) and renamed into place only when
complete, so a crash never leaves a half-written entry. Features are streamed into the memory map batch
by batch, so RAM stays bounded for datasets larger than memory, and read back memory-mapped. Every read
checks the sidecar (shape, dtype, file sizes, CRC32 of every chunk up to 1 GiB, a sample of chunks
beyond) and the fingerprint of the model's backbone weights; an entry that fails is logged as a warning,
deleted and rebuilt — never trusted.

Clearing the cache: ``zoo cache clear`` (everything), ``zoo cache clear features|pixels|onnx``; from
Python ``zoo_core.cache.clear_cache("all" | "features" | "pixels" | "onnx")``, which returns the
bytes freed; or delete the directories by hand (``rm -rf ~/.cache/backbone-zoo/features``) — nothing
else depends on them. ``cache_summary()`` lists the entries. Pretrained weights live in torchvision's and
timm's own caches (``$TORCH_HOME``, the Hugging Face hub) and are never touched by ``clear_cache``.
"""

from __future__ import annotations

from .extract import FeatureSet, extract_features, extraction_speed, open_features
from .keys import (
    FORMAT_VERSION,
    FeatureKey,
    cache_root,
    feature_key,
    model_fingerprint,
    pixel_key,
    weights_identity,
)
from .passes import ForwardPass
from .pixels import PixelCache
from .policy import candidate_passes, choose_pass, choose_pass_once
from .service import shared_pixels, split_features
from .store import KINDS, cache_summary, clear_cache, read_meta

__all__ = [
    "FORMAT_VERSION", "KINDS", "FeatureKey", "FeatureSet", "ForwardPass", "PixelCache", "cache_root",
    "cache_summary", "candidate_passes", "choose_pass", "choose_pass_once", "clear_cache", "extract_features",
    "extraction_speed", "feature_key", "model_fingerprint", "open_features", "pixel_key", "read_meta",
    "shared_pixels", "split_features", "weights_identity",
]
