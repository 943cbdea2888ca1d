"""Creating backbones by name and describing them: ``create`` and ``info``."""

from __future__ import annotations

import logging
import os

from torch import nn

from . import probe, registry
from . import weights as wts
from .adapter import BackboneInfo
from .freezing import count_parameters

log = logging.getLogger("zoo_core")


def create(
    name: str,
    num_classes: int | None = None,
    weights: str | os.PathLike | None = "DEFAULT",
) -> nn.Module:
    """Build backbone ``name`` with a ``num_classes``-way head.

    :param num_classes: outputs of the head; ``None`` keeps the pretrained head (ImageNet-1k).
    :param weights: ``"DEFAULT"`` (the family's recommended pretrained weights, downloaded into its
        cache), ``None`` (random init), a weight tag from ``info(name).weights``, or a local
        ``.pth``/``.pt``/``.safetensors`` file. Missing pretrained weights raise ``WeightsError``.
    """
    adapter, _ = registry.get_adapter(name)
    if wts.is_local_path(weights):
        model = adapter.create(name, weights=None, num_classes=num_classes)
        path = os.fspath(weights)  # type: ignore[arg-type]
        skipped = wts.load_into(
            model, wts.read_state_dict(path), head=adapter.head_name(model), source=path
        )
        if skipped:
            log.info("%s: kept a fresh head; skipped checkpoint keys %s", name, skipped)
        return model
    return adapter.create(name, weights=weights, num_classes=num_classes)  # type: ignore[arg-type]


def info(name: str) -> BackboneInfo:
    """Describe ``name``: family, plugin, size, feature dim, preprocessing, stages and weights."""
    adapter, plugin = registry.get_adapter(name)
    model = probe.meta_model(adapter, name)
    head = adapter.head_name(model)
    available = adapter.available_weights(name)
    return BackboneInfo(
        name=name,
        family=adapter.family,
        plugin=plugin,
        num_params=count_parameters(model)[0],
        feature_dim=probe.feature_dim(adapter, name, model),
        head=head,
        data_config=adapter.data_config(name, "DEFAULT" if available else None),
        stages=[s for s, _ in adapter.stages(model)],
        weights=available,
        default_weights=available[0] if available else None,
        extra=adapter.describe(name),
    )
