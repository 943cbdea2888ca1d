"""``BackboneAdapter``: what a plugin implements for one family of backbones, and ``DataConfig``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import torch
from torch import nn

from . import freezing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig:
    """Preprocessing a backbone's weights expect: evaluation is resize → center crop → normalise."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 0.875

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the network input."""
        return (self.input_size[1], self.input_size[2])

    @property
    def resize_size(self) -> int:
        """Shorter-side size before the center crop."""
        return int(round(max(self.image_size) / self.crop_pct))

    def with_image_size(self, size: int | None) -> DataConfig:
        """Same config with a square input of ``size`` pixels (``None``: unchanged)."""
        if not size:
            return self
        return replace(self, input_size=(self.input_size[0], int(size), int(size)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        known = {f: d[f] for f in cls.__dataclass_fields__ if f in d}
        for key in ("input_size", "mean", "std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


@dataclass
class BackboneInfo:
    """What :func:`zoo_core.info` reports about one backbone."""

    name: str
    family: str
    plugin: str
    num_params: int
    feature_dim: int
    head: str
    data_config: DataConfig
    stages: list[str]
    weights: list[str]
    default_weights: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["data_config"] = self.data_config.to_dict()
        return d


class BackboneAdapter:
    """Create, freeze and re-head the backbones of one family.

    A minimal adapter implements :meth:`names` and :meth:`create`, and usually :meth:`replace_head`
    and :meth:`freeze`; everything else has a default built on :mod:`zoo_core.backbones.freezing` that works for
    any model whose head is its last ``nn.Linear``. ``create`` receives ``weights`` as ``"DEFAULT"``,
    ``None`` or one of :meth:`available_weights`; local checkpoint paths are loaded by the core.
    """

    #: family shown by ``zoo list``/``zoo info`` and selected with ``--family``
    family: str = "custom"

    def names(self) -> Sequence[str]:
        """All backbone names this adapter can create."""
        raise NotImplementedError

    def create(self, name: str, *, weights: str | None = None, num_classes: int = 1000) -> nn.Module:
        """Build ``name`` with ``weights`` and a head of ``num_classes`` outputs."""
        raise NotImplementedError

    def replace_head(self, model: nn.Module, num_classes: int) -> nn.Module:
        """Put a fresh ``num_classes``-way head on ``model`` and return it."""
        return freezing.replace_linear_head(model, self.head_name(model), num_classes)

    def freeze(self, model: nn.Module, trainable_stages: int = 0) -> nn.Module:
        """Freeze all but the head and the last ``trainable_stages`` stages; return ``model``."""
        return freezing.freeze_stages(
            model, self.stages(model), self.head_name(model), trainable_stages
        )

    # ---- optional: sensible defaults -------------------------------------------------------
    def head_name(self, model: nn.Module) -> str:
        """Dotted name of the classifier ``nn.Linear`` that :meth:`replace_head` swaps."""
        return freezing.find_head(model)

    def stage_patterns(self, model: nn.Module) -> list[tuple[str, str]]:
        """Ordered ``(stage, regex)`` pairs, input→output; empty means one stage per child."""
        return []

    def stages(self, model: nn.Module) -> freezing.Stages:
        """Ordered ``(stage, member names)`` list, input→output, head excluded."""
        head = self.head_name(model)
        patterns = self.stage_patterns(model)
        if patterns:
            return freezing.stages_from_patterns(model, patterns, head)
        return freezing.default_stages(model, head)

    def data_config(self, name: str, weights: str | None = "DEFAULT") -> DataConfig:
        """Preprocessing the given weights expect (default: ImageNet 224 px, bilinear)."""
        return DataConfig()

    def available_weights(self, name: str) -> list[str]:
        """Names of the pretrained weights ``create`` accepts for ``name`` (first = DEFAULT)."""
        return []

    def has_pretrained(self, name: str) -> bool:
        """True when ``weights="DEFAULT"`` gives pretrained weights for ``name``."""
        return bool(self.available_weights(name))

    def describe(self, name: str) -> dict[str, Any]:
        """Extra metadata for ``zoo info`` (paper, license, …); default empty."""
        return {}

    def feature_dim(self, model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> int:
        """Width of :meth:`features` for ``model``: the head's ``in_features``, else one probe forward
        of a zero batch of ``input_size`` (free on the meta device)."""
        head = model.get_submodule(self.head_name(model))
        width = getattr(head, "in_features", None)
        if isinstance(width, int) and width > 0:
            return width
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return int(self.features(model, torch.zeros(1, *input_size, device=device)).shape[1])
        finally:
            model.train(was_training)

    def features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Pooled pre-head features of ``images``: exactly what the head receives."""
        head = model.get_submodule(self.head_name(model))
        captured: list[torch.Tensor] = []

        def grab(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            captured.append(args[0])

        handle = head.register_forward_pre_hook(grab)
        try:
            model(images)
        finally:
            handle.remove()
        return captured[-1].flatten(1)
