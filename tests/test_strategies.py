"""``zoo_core.strategies``: which stages each named strategy trains per epoch, optimizer groups with per-stage
learning rates, and the warm-up + cosine schedule the epoch loop uses, on a tiny two-stage net and random-init real backbones."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from helpers_toys import TwoStageNet
from torch import nn

import zoo_core
from zoo_core import ZooError, strategies
from zoo_core.backbones.freezing import default_stages, freeze_stages
from zoo_core.training import TrainConfig, loop, run_shape


def tiny_adapter(stages: list) -> SimpleNamespace:
    """What strategies.apply_stages needs of an adapter: ``freeze(model, k)``."""
    return SimpleNamespace(freeze=lambda model, k: freeze_stages(model, stages, "fc", k))


@pytest.mark.parametrize("name, expected", [
    ("feature-extraction", [0, 0, 0, 0]),
    ("finetune", [2, 2, 2, 2]),  # trainable_stages=2 throughout
    ("full", [5, 5, 5, 5]),
    ("gradual", [0, 0, 5, 5]),  # head_epochs=2, then every stage
])
def test_each_strategy_trains_its_stages_per_epoch(name: str, expected: list[int]) -> None:
    s = strategies.get_strategy(name)
    assert [s.trainable_stages(e, 5, 2, 2) for e in range(4)] == expected
    assert s.backbone_frozen_throughout() is (name == "feature-extraction")
    assert s.default_augment is (name != "feature-extraction")


def test_finetune_caps_at_the_stage_count_and_aliases_resolve() -> None:
    assert strategies.get_strategy("finetune").trainable_stages(0, 3, 7, 1) == 3
    assert strategies.get_strategy("linear").name == "feature-extraction"
    assert strategies.get_strategy("fine-tune").name == "finetune"
    assert strategies.get_strategy("freeze-unfreeze").name == "gradual"
    with pytest.raises(ZooError) as info:
        strategies.get_strategy("sideways")
    assert "sideways" in str(info.value) and all(n in str(info.value) for n in strategies.STRATEGIES)


def test_apply_stages_freezes_all_but_the_top_k_or_unfreezes_everything() -> None:
    model = TwoStageNet()
    stages = default_stages(model, "fc")
    adapter = tiny_adapter(stages)
    strategies.apply_stages(model, adapter, 1, len(stages))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith(("block.", "fc."))}
    strategies.apply_stages(model, adapter, len(stages), len(stages))  # k >= n: everything trains
    assert all(p.requires_grad for p in model.parameters())


def test_param_groups_lrs_decay_per_stage_towards_the_input() -> None:
    model = TwoStageNet()
    stages = default_stages(model, "fc")
    assert [s for s, _ in stages] == ["stem", "block"]
    groups = strategies.param_groups(model, stages, "fc", lr=0.1, weight_decay=0.05, backbone_lr_mult=0.5,
                                     layer_decay=0.2)
    lrs = {(g["name"], g["weight_decay"]): g["lr"] for g in groups}
    assert lrs == pytest.approx({("head", 0.05): 0.1, ("head", 0.0): 0.1, ("block", 0.05): 0.05,
                                 ("block", 0.0): 0.05, ("stem", 0.05): 0.01, ("stem", 0.0): 0.01})
    assert all(g["initial_lr"] == g["lr"] for g in groups)
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    assert decayed == {id(model.stem[0].weight), id(model.block[0].weight), id(model.fc.weight)}  # no norms/biases

    # parameters outside every stage train at the plain backbone multiplier; frozen ones are left out
    only_block = [s for s in stages if s[0] == "block"]
    model.block[0].weight.requires_grad_(False)
    groups = strategies.param_groups(model, only_block, "fc", lr=0.1, weight_decay=0.0, backbone_lr_mult=0.5,
                                     layer_decay=0.2)
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["lr"] == pytest.approx(0.05) and by_name["block"]["lr"] == pytest.approx(0.05)
    assert id(model.block[0].weight) not in {id(p) for g in groups for p in g["params"]}


def test_warmup_cosine_drives_set_lr_and_the_loop_schedule() -> None:
    f = strategies.warmup_cosine(30, 5, floor=0.1)
    assert [f(s) for s in range(5)] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
    assert f(5) == 1.0 and f(30) == pytest.approx(0.1) and f(1000) == pytest.approx(0.1)
    assert f(5 + 25 // 2) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 12 / 25)))
    model = TwoStageNet()
    opt = strategies.make_optimizer(strategies.param_groups(
        model, default_stages(model, "fc"), "fc", lr=0.2, weight_decay=0.0, backbone_lr_mult=0.5, layer_decay=1.0),
        "sgd", momentum=0.5)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.5
    strategies.set_lr(opt, f(2))
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([0.1 * 3 / 6, 0.2 * 3 / 6])
    # the epoch loop: warm-up over warmup_epochs of the run's steps, cosine over all of them
    lr_at = loop.lr_schedule(TrainConfig(warmup_epochs=0.5), steps_per_epoch=10, epochs=3)
    reference = strategies.warmup_cosine(30, 5)
    assert [lr_at(s) for s in range(31)] == [reference(s) for s in range(31)]
    with pytest.raises(ZooError, match="'adamw' or 'sgd'"):
        strategies.make_optimizer([], "lion")


# ---- the groups and schedule of real backbones --------------------------------------------------------------------
def _groups_for(backbone: str, k: int | None, **kw: Any) -> tuple[nn.Module, list, list[dict]]:
    adapter, _ = zoo_core.get_adapter(backbone)
    model = zoo_core.create(backbone, num_classes=3, weights=None)
    stages = adapter.stages(model)
    strategies.apply_stages(model, adapter, len(stages) if k is None else k, len(stages))
    groups = strategies.param_groups(model, stages, adapter.head_name(model), **{
        "lr": 1e-2, "weight_decay": 0.05, "backbone_lr_mult": 0.1, "layer_decay": 0.5, **kw})
    return model, stages, groups


def test_param_groups_only_trainable_no_decay_on_norms_and_biases_discriminative_lrs() -> None:
    model, stages, groups = _groups_for("resnet18", None)
    names = {id(p): n for n, p in model.named_parameters()}
    modules = dict(model.named_modules())
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in model.parameters())  # each exactly once
    n = len(stages)
    assert [s for s, _ in stages] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    for g in groups:
        expected = 1e-2 if g["name"] == "head" else 1e-2 * 0.1 * 0.5 ** (n - 1 - [s for s, _ in stages].index(g["name"]))
        assert g["lr"] == pytest.approx(expected) and g["initial_lr"] == g["lr"]
        for p in g["params"]:
            name = names[id(p)]
            owner = modules[name.rpartition(".")[0]]
            is_norm = isinstance(owner, nn.BatchNorm2d)
            assert g["weight_decay"] == (0.0 if is_norm or name.endswith("bias") else 0.05), name
    assert {g["name"] for g in groups} == {"stem", "layer1", "layer2", "layer3", "layer4", "head"}

    model, _, groups = _groups_for("resnet18", 1)
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}
    assert in_groups == {id(p) for n_, p in model.named_parameters() if n_.startswith(("layer4.", "fc."))}

    _, _, groups = _groups_for("resnet18", 0)
    assert {g["name"] for g in groups} == {"head"}
    assert {(g["lr"], g["weight_decay"]) for g in groups} == {(1e-2, 0.05), (1e-2, 0.0)}

    model, _, groups = _groups_for("timm/test_vit", None)  # LayerNorm weights decay-free too
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(id(m.weight) in no_decay and id(m.bias) in no_decay for m in norms)

    head = nn.Linear(4, 2)  # head="" means the module is the head (head training on cached features)
    groups = strategies.param_groups(head, [], "", lr=0.1, weight_decay=0.05, backbone_lr_mult=0, layer_decay=1)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [("head", 0.1, 0.05), ("head", 0.1, 0.0)]


def test_warmup_cosine_shape() -> None:
    f = strategies.warmup_cosine(100, 10, floor=0.01)
    values = [f(s) for s in range(101)]
    assert values[0] == pytest.approx(1 / 11) and values[9] == pytest.approx(10 / 11) and values[10] == 1.0
    assert all(a < b for a, b in zip(values[:10], values[1:11]))  # linear warm-up
    assert all(a > b for a, b in zip(values[10:100], values[11:101]))  # strictly decaying cosine
    assert values[55] == pytest.approx(0.01 + 0.99 * 0.5) and values[100] == pytest.approx(0.01)
    assert strategies.warmup_cosine(5, 0)(0) == 1.0 and strategies.warmup_cosine(1, 7)(0) == 1.0


@pytest.mark.parametrize("options, expected", [
    ({}, (True, (), False, False, ("train", "val"))),  # feature extraction: cached head fit, both splits decoded
    ({"augment": "flip"}, (False, ("flip",), False, False, ("train", "val"))),  # flips need no re-decoding
    ({"strategy": "finetune"}, (False, ("crop", "flip"), True, True, ("train", "val"))),  # LP-FT + auto check
    ({"strategy": "finetune", "augment": "crop", "head_init": "random"}, (False, ("crop",), False, False, ("val",))),
    ({"strategy": "full", "augment": "crop"}, (False, ("crop",), True, False, ("train", "val"))),  # the probe reads train
    ({"cache_features": False}, (True, (), False, False, ("train", "val"))),  # the same path, in memory
    ({"share_decoding": False}, (True, (), False, False, ())),
])
def test_run_shape_decides_the_cached_path_the_probe_and_the_decoded_splits(options: dict, expected: tuple) -> None:
    shape = run_shape(TrainConfig(**{"share_decoding": True, **options}))
    assert (shape.cached, shape.augment, shape.probe, shape.augment_auto, shape.shared) == expected
    assert shape.from_probe == (shape.probe and options.get("head_init") != "random")
