"""What a backbone's model says about itself without weights: built on the meta device, its feature width."""

from __future__ import annotations

import weakref

import torch
from torch import nn

from .adapter import BackboneAdapter

_WIDTHS: weakref.WeakKeyDictionary[BackboneAdapter, dict[str, int]] = weakref.WeakKeyDictionary()


def meta_model(adapter: BackboneAdapter, name: str) -> nn.Module:
    """``name`` built with random init and its own head on the meta device (no memory, no weights);
    on the CPU for the few models that cannot be built on meta."""
    try:
        with torch.device("meta"):
            return adapter.create(name, weights=None, num_classes=None)
    except Exception:  # noqa: BLE001 - some models cannot be built on meta; pay for a CPU build
        return adapter.create(name, weights=None, num_classes=None)


def feature_dim(adapter: BackboneAdapter, name: str, model: nn.Module | None = None) -> int:
    """Width of ``adapter.features`` for ``name`` (``model``: an already built one), remembered per process."""
    known = _WIDTHS.setdefault(adapter, {})
    if name not in known:
        built = model if model is not None else meta_model(adapter, name)
        try:
            size = tuple(adapter.data_config(name, "DEFAULT" if adapter.has_pretrained(name) else None).input_size)
        except Exception:  # noqa: BLE001 - a data config that needs weights; the probe's default size
            size = (3, 224, 224)
        known[name] = int(adapter.feature_dim(built, size))
    return known[name]
