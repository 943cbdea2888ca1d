"""The conformance kit over the built-in families, and proof that it catches broken adapters."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

import zoo_core
from zoo_core.backbones import freezing
from zoo_core.testing import adapter_names_for_tests, check_adapter, check_plugin

BACKBONES = ["resnet18", "vgg11_bn", "timm/test_resnet", "timm/test_vit", "timm/test_efficientnet", "efficientnet_lite0"]


@pytest.mark.parametrize("name", BACKBONES)
def test_builtin_backbones_conform(name: str) -> None:
    check_adapter(name)


def test_check_adapter_accepts_an_adapter_and_a_name() -> None:
    adapter, _ = zoo_core.get_adapter("timm/test_resnet")
    check_adapter(adapter, "timm/test_resnet", num_classes=5, image_size=48, batch_size=3, steps=1)


def test_check_adapter_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_adapter("timm/test_resnet")
    assert torch.equal(torch.rand(3), expected)


# ---- a minimal adapter: only names() and create(), everything else from the base class ----------
class TinyNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Dropout(0.5))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.body(self.stem(x))).flatten(1))


class TinyAdapter(zoo_core.BackboneAdapter):
    family = "tiny"

    def names(self) -> list[str]:
        return ["tiny"]

    def create(self, name: str, *, weights: str | None = None, num_classes: int | None = 1000) -> nn.Module:
        return TinyNet(num_classes or 1000)


def test_minimal_adapter_conforms_with_base_class_defaults() -> None:
    check_adapter(TinyAdapter(), "tiny")
    check_adapter(TinyAdapter)  # a class and the default (first) name work too
    assert adapter_names_for_tests(TinyAdapter) == ["tiny"]


# ---- broken adapters: each must be caught with a precise message ---------------------------------
class NoBatchNormLock(TinyAdapter):
    """Sets requires_grad correctly but lets frozen BatchNorm layers follow model.train()."""

    def freeze(self, model: nn.Module, trainable_stages: int = 0) -> nn.Module:
        super().freeze(model, trainable_stages)
        for m in model.modules():
            freezing.unlock_eval(m)
        return model


class LeakyFreeze(TinyAdapter):
    """Forgets to freeze the stem."""

    def freeze(self, model: nn.Module, trainable_stages: int = 0) -> nn.Module:
        super().freeze(model, trainable_stages)
        for p in model.stem.parameters():
            p.requires_grad_(True)
        return model


class FreezesTooMuch(TinyAdapter):
    """Freezes the last stage even when asked to leave it trainable."""

    def freeze(self, model: nn.Module, trainable_stages: int = 0) -> nn.Module:
        return super().freeze(model, 0)


class FreezeReturnsNone(TinyAdapter):
    def freeze(self, model: nn.Module, trainable_stages: int = 0) -> None:  # type: ignore[override]
        super().freeze(model, trainable_stages)


class HeadNotReplaced(TinyAdapter):
    def replace_head(self, model: nn.Module, num_classes: int) -> nn.Module:
        return model


class HeadReplacedOnACopy(TinyAdapter):
    """Returns a new model with the new head and leaves the one it was given alone (CONTRIBUTING: in place)."""

    def replace_head(self, model: nn.Module, num_classes: int) -> nn.Module:
        return freezing.replace_linear_head(copy.deepcopy(model), "classifier", num_classes)


class TwoLinears(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.neck = nn.Linear(4, 8)
        self.out = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.neck(self.body(x))))


class WrongHeadName(TinyAdapter):
    """head_name() names the inner Linear: the default replace_head swaps the wrong layer."""

    def create(self, name: str, *, weights: str | None = None, num_classes: int | None = 1000) -> nn.Module:
        return TwoLinears(num_classes or 1000)

    def head_name(self, model: nn.Module) -> str:
        return "neck"


class HeadNameOffTarget(WrongHeadName):
    """replace_head swaps the right layer, but head_name() still points at another one."""

    def replace_head(self, model: nn.Module, num_classes: int) -> nn.Module:
        return freezing.replace_linear_head(model, "out", num_classes)


class WrongFeatures(TinyAdapter):
    def features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model(images)  # the logits, not what the head receives


class PoolFeatures(TinyAdapter):
    """Right shape, wrong tensor: features before the ReLU, so head(features) != logits."""

    def features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.pool(model.body[:2](model.stem(images))).flatten(1)


class StateOutsideStateDict(TinyAdapter):
    """Each model gets a random input scaling that is not a buffer, so a reload changes the outputs."""

    def create(self, name: str, *, weights: str | None = None, num_classes: int | None = 1000) -> nn.Module:
        model = super().create(name, weights=weights, num_classes=num_classes)
        scale = float(torch.rand(()) + 0.5)
        model.stem[0].register_forward_pre_hook(lambda _m, args: (args[0] * scale,))
        return model


class WrongOutputSize(TinyAdapter):
    def create(self, name: str, *, weights: str | None = None, num_classes: int | None = 1000) -> nn.Module:
        return TinyNet(10)


class OrphanParameters(TinyAdapter):
    def stages(self, model: nn.Module) -> freezing.Stages:
        return [(s, m) for s, m in super().stages(model) if s != "stem"]  # the stem is in no stage


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        (NoBatchNormLock, r"changed buffer\(s\) of frozen layers: .*stem\.1\.running_mean.*lock_eval"),
        (LeakyFreeze, r"freeze\(model, 0\).*left 4 parameter\(s\) trainable .*stem\.0\.bias, stem\.0\.weight, stem\.1\.bias"),
        (FreezesTooMuch, r"freeze\(model, 1\).*froze 4 parameter\(s\) that should train: body\.0\.bias"),
        (FreezeReturnsNone, r"freeze\(model, 0\): returned NoneType, expected an nn.Module"),
        (HeadNotReplaced, r"replace_head\(model, 5\): model\(x\) has shape \(2, 3\), expected \(2, 5\) "
                          r"\(head_name\(model\) is 'classifier'"),
        (HeadReplacedOnACopy, r"replace_head\(model, 5\): returned a different TinyNet object .* in place"),
        (WrongHeadName, r"replace_head\(model, 5\): raised RuntimeError: mat1 and mat2 .* \(head_name\(model\) "
                        r"is 'neck': it must name the final classifier layer"),
        (HeadNameOffTarget, r"replace_head\(model, 5\): the logits have 5 outputs, but the head module has "
                            r"out_features=8 \(head_name\(model\) is 'neck'"),
        (WrongFeatures, r"features\(model, x\): has shape \(2, 3\), expected \(2, 8\)"),
        (PoolFeatures, r"head\(features\) differs from model\(x\)"),
        (StateOutsideStateDict, r"state_dict round trip: a fresh model .* gives other outputs"),
        (WrongOutputSize, r"create\('tiny', weights=None, num_classes=3\): model\(x\) has shape \(2, 10\)"),
        (OrphanParameters, r"stages\(model\): 4 non-head parameter\(s\) belong to no stage: stem\.0\.bias"),
    ],
)
def test_check_adapter_catches_broken_adapters(adapter: type, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_adapter(adapter(), "tiny")


def test_check_adapter_catches_unlocked_batchnorm_in_a_real_family() -> None:
    resnet, _ = zoo_core.get_adapter("resnet18")

    class ResNetWithoutLock(type(resnet)):  # type: ignore[misc]
        def freeze(self, model: nn.Module, trainable_stages: int = 0) -> nn.Module:
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith(("fc.", "layer4.")) if trainable_stages else name.startswith("fc."))
            return model

    with pytest.raises(AssertionError, match=r"train step after freeze\(model, 1\): changed buffer.*bn1"):
        check_adapter(ResNetWithoutLock(), "resnet18")


def test_check_adapter_rejects_unknown_names_and_non_adapters() -> None:
    with pytest.raises(AssertionError, match="'nope' is not among the adapter's names"):
        check_adapter(TinyAdapter(), "nope")
    with pytest.raises(AssertionError, match="not a zoo_core.BackboneAdapter"):
        check_adapter(object())  # type: ignore[arg-type]
    with pytest.raises(zoo_core.UnknownBackboneError):
        check_adapter("resnet19")


def test_check_plugin() -> None:
    from zoo_core import hookimpl

    class Good:
        @hookimpl
        def register_backbones(self, register):
            register(TinyAdapter())

    adapters = check_plugin(Good())
    assert [type(a) for a in adapters] == [TinyAdapter]

    class Misspelt:
        @hookimpl
        def register_backbone(self, register):
            register(TinyAdapter())

    with pytest.raises(AssertionError, match=r"unknown hook 'register_backbone'.*did you mean 'register_backbones'\? "
                       r".*test_conformance\.py:\d+\)"):
        check_plugin(Misspelt())

    class Raises:
        @hookimpl
        def register_backbones(self, register):
            register("not an adapter")

    with pytest.raises(AssertionError, match=r"register_backbones TypeError: register\(\) got 'not an adapter'.* "
                       r"\(.*test_conformance\.py:\d+\)$") as err:
        check_plugin(Raises())
    assert f"zoo_core{os.sep}" not in str(err.value)  # the plugin's own line, not the kit's

    class Twice:
        @hookimpl
        def register_backbones(self, register):
            register(TinyAdapter())
            register(TinyAdapter())

    with pytest.raises(AssertionError, match="'tiny' registered by both"):
        check_plugin(Twice())
