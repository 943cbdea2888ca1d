"""The registry: listing with filters, unknown names with close matches, and ``info()``."""

from __future__ import annotations

import json

import pytest

import zoo_core
from zoo_core import UnknownBackboneError, ZooError
from zoo_core.backbones.adapter import IMAGENET_MEAN, IMAGENET_STD

VGG = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]


def test_list_backbones_glob_is_sorted_and_case_insensitive() -> None:
    assert zoo_core.list_backbones("resnet1*") == ["resnet101", "resnet152", "resnet18"]
    assert zoo_core.list_backbones("RESNET18") == ["resnet18"]
    assert zoo_core.list_backbones("wide_*") == ["wide_resnet101_2", "wide_resnet50_2"]
    everything = zoo_core.list_backbones()
    assert everything == sorted(everything) and len(everything) == len(set(everything))
    assert {"resnet18", "vgg11", "timm/test_resnet", "timm/test_resnet.r160_in1k"} <= set(everything)
    assert zoo_core.list_backbones("no_such_*") == []


def test_list_backbones_family_filter() -> None:
    assert zoo_core.list_backbones(family="vgg") == VGG
    resnets = zoo_core.list_backbones(family="resnet")
    assert "resnet18" in resnets and "resnext50_32x4d" in resnets and not any("vgg" in n for n in resnets)
    timms = zoo_core.list_backbones("*test_*", family="timm")
    assert timms and all(n.startswith("timm/") for n in timms)
    assert zoo_core.list_backbones("vgg*", family="resnet") == []
    with pytest.raises(zoo_core.ZooError, match="unknown family 'no-such-family'"):  # an error, not []
        zoo_core.list_backbones(family="no-such-family")


def test_list_backbones_pretrained_filter() -> None:
    everything = zoo_core.list_backbones("timm/test_*")
    pretrained = zoo_core.list_backbones("timm/test_*", pretrained=True)
    assert {"timm/test_resnet", "timm/test_resnet.r160_in1k", "timm/test_vit"} <= set(pretrained)
    random_only = sorted(set(everything) - set(pretrained))
    assert random_only, "expected some timm test_* architectures without pretrained weights"
    adapter, _ = zoo_core.get_adapter(random_only[0])
    assert not adapter.has_pretrained(random_only[0]) and adapter.available_weights(random_only[0]) == []
    assert zoo_core.list_backbones("vgg*", pretrained=True) == VGG  # every torchvision VGG has weights


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("resnet19", "resnet18"), ("vgg11bn", "vgg11_bn"), ("timm/test_resnte", "timm/test_resnet")],
)
def test_unknown_name_suggests_close_matches(typo: str, suggestion: str) -> None:
    with pytest.raises(UnknownBackboneError) as err:
        zoo_core.create(typo, weights=None)
    msg = str(err.value)
    assert f"Unknown backbone {typo!r}" in msg and suggestion in msg.split("Did you mean:")[1]
    assert "zoo list" in msg and "\n" not in msg
    assert isinstance(err.value, ZooError) and isinstance(err.value, KeyError)
    with pytest.raises(UnknownBackboneError):
        zoo_core.info(typo)


def test_unknown_name_without_close_match_still_says_what_to_do() -> None:
    with pytest.raises(UnknownBackboneError, match="Run `zoo list`") as err:
        zoo_core.get_adapter("qqqqqqqqqqqq")
    assert "Did you mean" not in str(err.value)


def test_info_resnet18() -> None:
    i = zoo_core.info("resnet18")
    assert (i.name, i.family, i.plugin, i.head) == ("resnet18", "resnet", "resnet", "fc")
    assert i.num_params == 11_689_512 and i.feature_dim == 512
    assert i.stages == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert i.weights == ["IMAGENET1K_V1"] and i.default_weights == "IMAGENET1K_V1"
    dc = i.data_config
    assert dc.input_size == (3, 224, 224) and dc.resize_size == 256 and dc.crop_pct == pytest.approx(0.875)
    assert dc.mean == pytest.approx(IMAGENET_MEAN) and dc.std == pytest.approx(IMAGENET_STD)
    assert dc.interpolation == "bilinear"
    assert i.extra["ImageNet-1K"]["acc@1"] == pytest.approx(69.758)


def test_info_vgg11() -> None:
    i = zoo_core.info("vgg11")
    assert (i.family, i.plugin, i.head) == ("vgg", "vgg", "classifier.6")
    assert i.num_params == 132_863_336 and i.feature_dim == 4096
    assert i.stages == ["block1", "block2", "block3", "block4", "block5", "fc6", "fc7"]
    assert i.default_weights == "IMAGENET1K_V1" and i.data_config.input_size == (3, 224, 224)


def test_info_timm_test_resnet() -> None:
    i = zoo_core.info("timm/test_resnet")
    assert (i.family, i.plugin, i.head) == ("timm", "timm", "fc")
    assert i.feature_dim == 96 and 0 < i.num_params < 1_000_000
    assert i.stages[0] == "stem" and len(i.stages) == 5
    assert i.weights == ["r160_in1k"] and i.default_weights == "r160_in1k"
    assert i.data_config.input_size == (3, 160, 160) and i.data_config.mean == pytest.approx((0.5,) * 3)
    assert i.extra["hf_hub_id"] == "timm/test_resnet.r160_in1k"
    d = json.loads(json.dumps(i.to_dict()))  # JSON-ready as documented
    assert d["data_config"]["input_size"] == [3, 160, 160] and d["feature_dim"] == 96


def test_info_of_random_init_only_backbone() -> None:
    name = next(n for n in zoo_core.list_backbones("timm/test_*")
                if n not in set(zoo_core.list_backbones("timm/test_*", pretrained=True)))
    i = zoo_core.info(name)
    assert i.weights == [] and i.default_weights is None and i.feature_dim > 0
