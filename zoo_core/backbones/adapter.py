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


@dataclass(frozen=True)
class InputSizes:
    """The square input sizes (pixels) a backbone accepts: one of ``fixed`` when given, else any multiple
    of ``multiple_of`` from ``min_size`` on. ``why`` ends the refusal ("its position embedding is 14x14")."""

    fixed: tuple[int, ...] = ()
    multiple_of: int = 1
    min_size: int = 1
    why: str = ""

    def refusal(self, size: int) -> str | None:
        """Why ``size`` is not accepted (``"accepts only 224 px"``), or ``None`` when it is."""
        if self.fixed and size not in self.fixed:
            what = f"accepts only {' or '.join(str(f) for f in self.fixed)} px"
        elif size < self.min_size:
            what = f"needs at least {self.min_size} px"
        elif size % self.multiple_of:
            lo = max(self.min_size, size - size % self.multiple_of)
            what = f"needs a multiple of {self.multiple_of} px (e.g. {lo} or {lo + self.multiple_of})"
        else:
            return None
        return what + (f": {self.why}" if self.why else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"fixed": list(self.fixed), "multiple_of": self.multiple_of, "min_size": self.min_size}


@dataclass(frozen=True)
class StageSize:
    """One stage's parameter count, and what ``trainable_stages = k`` trains when this stage is the
    deepest one unfrozen (``trained`` parameters, head included; ``share`` of the whole model)."""

    stage: str
    params: int
    k: int
    trained: int
    share: float


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
    #: per stage, input → output: its parameter count and what ``--trainable-stages k`` trains
    stage_sizes: list[StageSize] = field(default_factory=list)
    #: head parameters (what ``--trainable-stages 0`` trains)
    head_params: int = 0
    input_sizes: InputSizes = field(default_factory=InputSizes)
    #: ``weights="DEFAULT"`` loads without a download now (cached or installed); ``None``: unknown
    weights_available: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["data_config"] = self.data_config.to_dict()
        d["input_sizes"] = self.input_sizes.to_dict()
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
        """Ordered ``(stage, regex)`` pairs, input→output; empty means one stage per top-level child
        (right for a plain sequential CNN only: a transformer overrides :meth:`stages` with
        :func:`~zoo_core.backbones.freezing.block_stages`)."""
        return []

    def stages(self, model: nn.Module) -> freezing.Stages:
        """Ordered ``(stage, member names)`` list, input→output, head excluded; every parameter and buffer
        outside the head in exactly one stage. Default: :meth:`stage_patterns`, else one stage per
        top-level child (:func:`~zoo_core.backbones.freezing.default_stages`)."""
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
        """True when ``weights="DEFAULT"`` gives pretrained weights for ``name`` (they exist upstream)."""
        return bool(self.available_weights(name))

    def weights_available(self, name: str) -> bool | None:
        """Whether ``weights="DEFAULT"`` loads now without a download (cached, or installed with a
        package); ``False`` when it needs one (or there are none), ``None`` when the adapter cannot tell."""
        return None if self.has_pretrained(name) else False

    def input_sizes(self, name: str) -> InputSizes:
        """The input sizes ``name`` accepts (default: any); a ViT with a fixed position embedding
        returns ``InputSizes(fixed=(224,))``, a model that needs whole patches ``InputSizes(multiple_of=16)``."""
        return InputSizes()

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
