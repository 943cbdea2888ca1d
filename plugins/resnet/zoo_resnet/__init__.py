"""backbone-zoo plugin: torchvision ResNet, ResNeXt and Wide-ResNet."""

from __future__ import annotations

from typing import Callable

from torch import nn

from zoo_core.plugin_kit import TorchvisionAdapter, hookimpl


class ResNetAdapter(TorchvisionAdapter):
    """torchvision ResNet family: head ``fc``; stages stem, layer1 … layer4."""

    family = "resnet"
    prefixes = ("resnet", "resnext", "wide_resnet")

    def head_name(self, model: nn.Module) -> str:
        """The ResNet classifier is ``model.fc``."""
        return "fc"

    def stage_patterns(self, model: nn.Module) -> list[tuple[str, str]]:
        """Stem (conv1, bn1) then the four residual stages."""
        stem = [("stem", r"^(conv1|bn1|relu|maxpool)(\.|$)")]
        return stem + [(f"layer{i}", rf"^layer{i}(\.|$)") for i in range(1, 5)]


@hookimpl
def register_backbones(register: Callable[..., None]) -> None:
    """Register the ResNet adapter."""
    register(ResNetAdapter())
