"""The library as another project uses it: every public name visible, feature widths, filtering by metadata."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import zoo_core
from zoo_core.backbones.registry import get_adapter

LAZY = ("train", "compare", "rank", "load", "predict", "export", "features", "transform")


def test_dir_and_all_show_the_lazy_api_and_no_typing_leftovers() -> None:
    names = dir(zoo_core)
    for name in (*LAZY, "create", "info", "list_backbones", "list_families"):
        assert name in names and name in zoo_core.__all__
    assert not {"Any", "annotations", "TYPE_CHECKING", "_LAZY"} & set(names)


def test_import_is_light_and_help_lists_the_lazy_functions() -> None:
    code = ("import sys, pydoc, zoo_core\n"
            "heavy = [m for m in ('zoo_core.training', 'zoo_core.comparison', 'zoo_core.inference', "
            "'zoo_core.ranking', 'zoo_core.exporting') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n"
            "print(pydoc.render_doc(zoo_core, renderer=pydoc.plaintext))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    for name in ("train(", "compare(", "rank(", "load(", "predict(", "export(", "features("):
        assert name in out, name


# DINO- and CLIP-style names among timm's smallest; mobilenetv3's head adds a layer (pre-logits 1024 ≠ 576)
@pytest.mark.parametrize("name", ["timm/vit_tiny_patch16_dinov3_qkvb", "timm/resnet50_clip_gap",
                                  "timm/mobilenetv3_small_050", "timm/test_vit", "timm/test_efficientnet",
                                  "resnet18"])
def test_feature_dim_is_the_width_features_returns(name: str) -> None:
    bi = zoo_core.info(name)
    adapter, _ = get_adapter(name)
    model = zoo_core.create(name, weights=None, num_classes=None).eval()
    with torch.no_grad():
        width = adapter.features(model, torch.zeros(1, *bi.data_config.input_size)).shape[1]
    assert bi.feature_dim == width > 0


def test_feature_dim_of_a_headless_model_comes_from_a_probe_forward() -> None:
    class Headless(torch.nn.Module):  # features straight out, its "head" an Identity
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = torch.nn.Conv2d(3, 7, 3), torch.nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x).mean((2, 3)))

    adapter = zoo_core.BackboneAdapter()
    adapter.head_name = lambda model: "head"  # type: ignore[method-assign]
    with torch.device("meta"):
        model = Headless()
    assert adapter.feature_dim(model, (3, 16, 16)) == 7


def test_list_backbones_filters_by_metadata_and_feature_dim() -> None:
    assert zoo_core.list_families()[:1] and "timm" in zoo_core.list_families()
    pretrained = set(zoo_core.list_backbones("resnet*", pretrained=True))
    assert {"resnet18", "resnet50"} <= pretrained
    assert zoo_core.list_backbones("resnet1*", family="resnet", feature_dim=512) == ["resnet18"]
    assert zoo_core.list_backbones("resnet1*", family="resnet", feature_dim=2048) == ["resnet101", "resnet152"]
    with pytest.raises(zoo_core.ZooError, match="unknown family 'rsnet'.*Did you mean: resnet"):
        zoo_core.list_backbones(family="rsnet")
