"""Tiny models and in-process plugins for tests: a two-stage net with a linear head, a base adapter for nets
with an ``fc`` head, and a plugin whose "backbones" give features of known quality (rank, compare --select)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo_core import BackboneAdapter, hookimpl
from zoo_core.backbones.adapter import DataConfig
from zoo_core.backbones.freezing import freeze_stages, replace_linear_head
from zoo_core.errors import WeightsError

NOISE_DIMS = 16


class TwoStageNet(nn.Module):
    """Two stages (conv + BatchNorm each, a Dropout in the second) and a linear head ``fc``."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block(self.stem(x))).flatten(1))


class FcHeadAdapter(BackboneAdapter):
    """An adapter for nets whose head is the linear layer ``fc``: head replacement and stage freezing."""

    def replace_head(self, model: nn.Module, num_classes: int) -> nn.Module:
        return replace_linear_head(model, "fc", num_classes)

    def freeze(self, model: nn.Module, trainable_stages: int = 0) -> nn.Module:
        return freeze_stages(model, self.stages(model), "fc", trainable_stages)


def plugin_of(adapter: BackboneAdapter) -> object:
    """An in-process plugin object that registers ``adapter``."""

    class Plugin:
        @hookimpl
        def register_backbones(self, register: Any) -> None:
            register(adapter)

    return Plugin()


class KnownFeatures(nn.Module):
    """Features of a chosen quality, a fixed function of the image (no randomness, no training):

    - ``good``: the mean of each channel in each image quadrant (where the class's square is), plus noise;
    - ``weak``: only the red channel's left-minus-right brightness (tells class 0 from classes 1 and 2, which
      share the right half and a red value of 255), plus noise;
    - ``noise``: only noise — ``sin`` of a large random projection of the pixels, unrelated to the class.
    """

    def __init__(self, kind: str, num_classes: int) -> None:
        super().__init__()
        self.kind = kind
        self.body = nn.Conv2d(3, 3, 1)  # an identity stage, so the backbone has parameters and a stage
        with torch.no_grad():
            self.body.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.body.bias.zero_()
        gen = torch.Generator().manual_seed(1234)
        self.register_buffer("projection", torch.randn(3 * 8 * 8, NOISE_DIMS, generator=gen))
        dim = {"good": 12, "weak": 1, "noise": 0}[kind] + NOISE_DIMS
        self.fc = nn.Linear(dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        noise = torch.sin(1e4 * (F.adaptive_avg_pool2d(x, 8).flatten(1) @ self.projection))
        quadrants = F.adaptive_avg_pool2d(x, 2)  # [B, 3, 2, 2]
        if self.kind == "good":
            return torch.cat([quadrants.flatten(1), noise], 1)
        if self.kind == "weak":
            red = quadrants[:, 0]
            return torch.cat([(red[:, :, 0] - red[:, :, 1]).mean(1, keepdim=True), noise], 1)
        return noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class KnownAdapter(FcHeadAdapter):
    family = "ranktoy"

    def names(self) -> list[str]:
        return ["rank_good", "rank_weak", "rank_noise", "rank_offline", "rank_broken"]

    def create(self, name: str, *, weights: str | None = None, num_classes: int = 1000) -> nn.Module:
        if name == "rank_broken":
            raise RuntimeError("boom: rank_broken cannot be built")
        if name == "rank_offline" and weights is not None:  # like a built-in family offline, empty cache
            raise WeightsError(f"{name}: pretrained weights unavailable offline")
        kind = name.removeprefix("rank_")
        return KnownFeatures("good" if kind == "offline" else kind, num_classes)

    def available_weights(self, name: str) -> list[str]:
        return ["known"]


class StagedCNN(nn.Module):
    """Three stages — a 1×1 colour mixer, a strided 3×3 conv, a 3×3 conv — and a linear head ``fc``."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.mix = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.top = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.top(self.down(self.mix(x)))).flatten(1))


class StagedAdapter(FcHeadAdapter):
    """``surg_cnn``: :class:`StagedCNN` at 32 px (resize to 32, no crop, mean/std 0.5)."""

    family = "surgtoy"

    def names(self) -> list[str]:
        return ["surg_cnn"]

    def create(self, name: str, *, weights: str | None = None, num_classes: int = 1000) -> nn.Module:
        return StagedCNN(num_classes)

    def data_config(self, name: str, weights: str | None = "DEFAULT") -> DataConfig:
        return DataConfig(input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)


def texture_images(n: int, classes: int, channel: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 32 px uint8 images per class: class ``c``'s texture (horizontal, vertical, checkered or diagonal
    stripes, random phase) in colour ``channel``, loud noise in the other two; (images, labels)."""
    gen = torch.Generator().manual_seed(seed)
    i, j = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    images, labels = [], []
    for c in range(classes):
        for _ in range(n):
            k = int(torch.randint(0, 8, (1,), generator=gen))
            wave = [(i + k) // 4, (j + k) // 4, (i + k) // 4 + (j + k) // 4, (i + j + k) // 4][c % 4] % 2
            img = torch.randint(0, 256, (3, 32, 32), generator=gen)
            img[channel] = 40 + 175 * wave + torch.randint(-20, 21, (32, 32), generator=gen)
            images.append(img.clamp(0, 255).to(torch.uint8))
            labels.append(c)
    return torch.stack(images), torch.tensor(labels)
