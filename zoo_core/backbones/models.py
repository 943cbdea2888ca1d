"""Creating backbones by name and describing them: ``create`` and ``info``."""

from __future__ import annotations

import logging
import os

from torch import nn

from ..errors import ZooError
from . import probe, registry
from . import weights as wts
from .adapter import BackboneInfo, StageSize
from .freezing import Stages, count_parameters, under

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
    """Describe ``name``: family, plugin, size, feature dim, preprocessing, accepted input sizes, stages
    (with their parameter counts), weights and whether they are available without a download."""
    adapter, plugin = registry.get_adapter(name)
    model = probe.meta_model(adapter, name)
    head = adapter.head_name(model)
    available = adapter.available_weights(name)
    stages = adapter.stages(model)
    return BackboneInfo(
        name=name,
        family=adapter.family,
        plugin=plugin,
        num_params=count_parameters(model)[0],
        feature_dim=probe.feature_dim(adapter, name, model),
        head=head,
        data_config=adapter.data_config(name, "DEFAULT" if available else None),
        stages=[s for s, _ in stages],
        weights=available,
        default_weights=available[0] if available else None,
        extra=adapter.describe(name),
        stage_sizes=stage_sizes(model, stages, head),
        head_params=sum(p.numel() for n, p in model.named_parameters() if under(n, head)),
        input_sizes=adapter.input_sizes(name),
        weights_available=adapter.weights_available(name) if available else False,
    )


def stage_sizes(model: nn.Module, stages: Stages, head: str) -> list[StageSize]:
    """Each stage's parameter count, input → output, with what ``trainable_stages = k`` trains when the
    stage is the deepest one unfrozen: the head and the last ``k`` stages."""
    numel = {n: p.numel() for n, p in model.named_parameters()}
    total = sum(numel.values()) or 1
    trained = sum(v for n, v in numel.items() if under(n, head))
    out: list[StageSize] = []
    for i in range(len(stages) - 1, -1, -1):
        stage, members = stages[i]
        params = sum(numel.get(m, 0) for m in members)
        trained += params
        out.append(StageSize(stage, params, len(stages) - i, trained, trained / total))
    return out[::-1]


def check_image_size(name: str, size: int | None, option: str = "--image-size") -> None:
    """Refuse, in one line naming ``option``, an input size that backbone ``name`` does not accept
    (:meth:`~zoo_core.BackboneAdapter.input_sizes`); ``None`` (the backbone's own size) always passes."""
    if not size:
        return
    adapter, _ = registry.get_adapter(name)
    why = adapter.input_sizes(name).refusal(int(size))
    if why:
        raise ZooError(f"{option} {size}: {name} {why}; leave {option} out to use its own input size")


def weights_status(name: str) -> str:
    """``"available"`` (``weights="DEFAULT"`` loads now: cached or installed), ``"download"`` (exists
    upstream, needs a download), ``"upstream"`` (exists; the adapter cannot tell whether it is at hand)
    or ``"none"`` (random init only). A name several plugins register counts its best owner."""
    found = ["none"]
    for adapter, _ in registry.owners(name):
        if adapter.has_pretrained(name):
            now = adapter.weights_available(name)
            found.append("available" if now else ("download" if now is False else "upstream"))
    return max(found, key=_STATUS_ORDER.index)


_STATUS_ORDER = ("none", "download", "upstream", "available")
