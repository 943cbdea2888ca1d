"""Shared base for adapters over ``torchvision.models`` classification builders (ResNet, VGG, …)."""

from __future__ import annotations

from typing import Any, Sequence

import torchvision
from torch import nn
from torchvision.models import get_model, get_model_weights

from ..errors import WeightsError
from .adapter import BackboneAdapter, DataConfig
from .weights import offline_hint, torch_hub_checkpoint


class TorchvisionAdapter(BackboneAdapter):
    """Creates torchvision models by name; weights through torchvision's enums into ``$TORCH_HOME``.

    Subclasses set :attr:`family` and :attr:`prefixes` and describe their stages and head.
    """

    #: torchvision builder names starting with one of these belong to the family
    prefixes: tuple[str, ...] = ()

    def names(self) -> Sequence[str]:
        """torchvision classification builders whose name starts with one of :attr:`prefixes`."""
        all_names = torchvision.models.list_models(module=torchvision.models)
        return sorted(n for n in all_names if n.startswith(self.prefixes))

    def _enum(self, name: str, weights: str) -> Any:
        enum_cls = get_model_weights(name)
        try:
            return enum_cls[weights]  # "DEFAULT" is an alias member of every weight enum
        except KeyError:
            raise WeightsError(
                f"{name} has no weights {weights!r}; choose one of {[w.name for w in enum_cls]}, "
                "'DEFAULT', None or a local checkpoint path"
            ) from None

    def create(self, name: str, *, weights: str | None = None, num_classes: int | None = 1000) -> nn.Module:
        """Build ``name`` through ``torchvision.models.get_model``; pretrained heads are replaced."""
        if weights is None:
            return get_model(name, weights=None, num_classes=num_classes or 1000)
        enum = self._enum(name, weights)
        cached = torch_hub_checkpoint(enum.url)
        try:
            model = get_model(name, weights=enum)
        except Exception as exc:  # noqa: BLE001 - offline, proxy, or a corrupt cached file
            what = (
                f"the cached file {cached} could not be read ({type(exc).__name__}: {exc}); delete it"
                if cached.exists()
                else f"{enum.url} could not be downloaded ({type(exc).__name__}: {exc})"
            )
            raise WeightsError(
                f"{name}: pretrained weights {enum} unavailable: {what}. {offline_hint(name, str(cached))}"
            ) from exc
        if num_classes and num_classes != len(enum.meta.get("categories") or []):
            self.replace_head(model, num_classes)
        return model

    def available_weights(self, name: str) -> list[str]:
        """The weight enum's members, DEFAULT's target first."""
        enum_cls = get_model_weights(name)
        default = enum_cls["DEFAULT"].name
        return [default] + [w.name for w in enum_cls if w.name != default]

    def weights_available(self, name: str) -> bool | None:
        """True when the DEFAULT weights' file is in torch hub's cache (no download needed)."""
        return torch_hub_checkpoint(self._enum(name, "DEFAULT").url).is_file()

    def data_config(self, name: str, weights: str | None = "DEFAULT") -> DataConfig:
        """Read input size, mean/std, interpolation and crop from the weights' ``transforms()``."""
        tf = self._enum(name, weights or "DEFAULT").transforms()
        crop = int(tf.crop_size[0])
        resize = int(tf.resize_size[0])
        return DataConfig(
            input_size=(3, crop, crop),
            mean=tuple(float(m) for m in tf.mean),
            std=tuple(float(s) for s in tf.std),
            interpolation=tf.interpolation.value,
            crop_pct=crop / resize,
        )

    def describe(self, name: str) -> dict[str, Any]:
        """ImageNet metrics, recipe and file size from the DEFAULT weights' ``meta``."""
        meta = self._enum(name, "DEFAULT").meta
        out: dict[str, Any] = {"recipe": meta.get("recipe")}
        for dataset, metrics in (meta.get("_metrics") or {}).items():
            out[dataset] = metrics
        if "_file_size" in meta:
            out["file_size_mb"] = meta["_file_size"]
        return out
