"""backbone-zoo plugin: torchvision VGG 11/13/16/19 and their batch-norm variants."""

from __future__ import annotations

from typing import Callable

from torch import nn

from zoo_core.plugin_kit import TorchvisionAdapter, hookimpl


class VGGAdapter(TorchvisionAdapter):
    """torchvision VGG: conv blocks split at the max-pools, then fc6, fc7; head ``classifier.6``."""

    family = "vgg"
    prefixes = ("vgg",)

    def head_name(self, model: nn.Module) -> str:
        """The last Linear of ``classifier`` (fc8)."""
        return "classifier.6"

    def stage_patterns(self, model: nn.Module) -> list[tuple[str, str]]:
        """``block1``…``block5`` (features, split after each MaxPool2d), ``fc6``, ``fc7``."""
        patterns, block = [], []
        for idx, layer in model.features.named_children():
            block.append(idx)
            if isinstance(layer, nn.MaxPool2d):
                patterns.append((f"block{len(patterns) + 1}", rf"^features\.({'|'.join(block)})(\.|$)"))
                block = []
        if block:  # trailing layers without a pool join the last block
            name, rx = patterns[-1]
            patterns[-1] = (name, rx.replace(")(", "|" + "|".join(block) + ")("))
        patterns.append(("fc6", r"^classifier\.[0-2](\.|$)"))
        patterns.append(("fc7", r"^classifier\.[3-5](\.|$)"))
        return patterns


@hookimpl
def register_backbones(register: Callable[..., None]) -> None:
    """Register the VGG adapter."""
    register(VGGAdapter())
