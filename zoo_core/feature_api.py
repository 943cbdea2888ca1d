"""The feature API for other projects: a backbone's pooled features of images or of a dataset, and its
preprocessing as one callable.

:func:`features` of a dataset (folder, built-in name, torch Dataset, DataSplit) is exactly a
feature-extraction run's: the run's set-up (:func:`zoo_core.training.build_run`) and the feature service
(:func:`zoo_core.cache.split_features`), so it reads and writes the same cache entry a ``zoo train
--strategy feature-extraction`` of the same backbone, weights, input size, data, seed and precision uses,
and chooses the forward pass the same way. Images (paths, PIL images, tensors; the tensor convention is in
:mod:`zoo_core.data.inputs`) are extracted in memory through the same passes, never cached.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .backbones.models import create
from .backbones.registry import get_adapter
from .cache import extract_features, split_features
from .data import DataSplit, Preprocess, image_list
from .errors import DataError
from .runtime import pick_device
from .training import TrainConfig, build_run, data_config_for


def _is_dataset(data: Any) -> bool:
    if isinstance(data, (Dataset, DataSplit)):
        return True
    return isinstance(data, (str, os.PathLike)) and not os.path.isfile(data)  # a folder or a built-in name


def _config(backbone: str, **options: Any) -> TrainConfig:
    """The feature-extraction run config whose features :func:`features` returns."""
    return TrainConfig(backbone=backbone, **{"strategy": "feature-extraction", "augment": False, "progress": False,
                                             **options})


def transform(backbone: str, weights: str | os.PathLike | None = "DEFAULT", image_size: int | None = None) -> Preprocess:
    """The evaluation preprocessing ``backbone`` with ``weights`` expects, as a callable: image (path, PIL image,
    ``uint8`` 0–255 or float 0–1 tensor) → normalised ``float32 [3, H, W]``; ``.batch(images)`` gives
    ``[B, 3, H, W]``. Reads metadata only (no model is built, no weights downloaded)."""
    adapter, _ = get_adapter(backbone)
    return Preprocess(data_config_for(adapter, _config(backbone, weights=weights, image_size=image_size)))


def features(backbone: str, data: Any, *, split: str = "train", weights: str | os.PathLike | None = "DEFAULT",
             image_size: int | None = None, batch_size: int = 64, device: str = "auto", precision: str = "auto",
             cache: bool = True, progress: bool = False, **options: Any) -> Any:
    """Pooled pre-head features of ``backbone`` (exactly what its head receives), as ``float32`` numpy arrays.

    ``data`` is either a dataset (an image folder, a built-in name, a torch Dataset or a DataSplit): the result
    is ``(features [N, D], labels [N])`` of its ``split`` (``"train"``, ``"val"`` or ``"test"``), through the
    feature cache (``cache=False``: computed, not stored) under the key a feature-extraction run uses;
    ``options`` are further :class:`~zoo_core.TrainConfig` fields that shape the split (``val_fraction``,
    ``seed``, ``data_root``, …). Or ``data`` is images (a path to an image file, a PIL image, a tensor
    ``[3, H, W]`` / ``[B, 3, H, W]`` in ``uint8`` 0–255 or float 0–1, or a list of these): the result is
    ``features [N, D]``, computed in memory. An ambiguous tensor is a :class:`DataError`.
    """
    cfg = _config(backbone, weights=weights, image_size=image_size, batch_size=batch_size, device=device,
                  precision=precision, cache_features=cache, progress=progress, **options)
    if _is_dataset(data):
        state = build_run(cfg, data)
        if getattr(state.split, split, None) is None:
            raise DataError(f"the data has no {split!r} split; use split='train', 'val' or, when there is one, 'test'")
        fs = split_features(state.cfg, state.split, split, state.model, state.adapter, state.data_cfg, state.device,
                            quiet=not progress)
        return np.asarray(fs.features.numpy()), np.asarray(fs.labels.numpy())
    adapter, _ = get_adapter(backbone)
    pre = Preprocess(data_config_for(adapter, cfg))
    items = [(image, -1) for image in image_list(data)]
    if not items:
        raise DataError("no images given")
    model = create(backbone, num_classes=None, weights=weights)
    fs = extract_features(model, adapter, items, pre.data_config, key=None, batch_size=batch_size,  # type: ignore[arg-type]
                          device=pick_device(device), precision=precision, progress=progress, transform=pre.uint8)
    return np.asarray(fs.features.numpy())
