"""``zoo_core.backbones.freezing``: frozen stages keep their weights and BatchNorm statistics through a train step,
stage counts, and stages named by patterns. A tiny two-stage net, one SGD step at a time."""

from __future__ import annotations

import pytest
import torch
from helpers_toys import TwoStageNet
from torch import nn

from zoo_core.backbones.freezing import (
    StageError,
    count_parameters,
    default_stages,
    freeze_stages,
    stages_from_patterns,
    unfreeze_all,
)

STEM_PARAMS = 3 * 4 * 9 + 4 + 2 * 4  # conv weight + bias, BN weight + bias
BLOCK_PARAMS = 4 * 8 * 9 + 8 + 2 * 8
HEAD_PARAMS = 8 * 3 + 3


def buffers(model: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in model.named_buffers() if n.startswith(prefix)}


def train_step(model: nn.Module, seed: int = 0) -> None:
    """One SGD step on random data over the trainable parameters (model in train mode)."""
    torch.manual_seed(seed)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    loss = nn.functional.cross_entropy(model(torch.randn(6, 3, 8, 8) * 3 + 1), torch.tensor([0, 1, 2] * 2))
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_frozen_stage_keeps_bn_statistics_and_weights_through_a_train_step() -> None:
    model = TwoStageNet()
    stages = default_stages(model, "fc")
    freeze_stages(model, stages, "fc", trainable_stages=1)
    assert count_parameters(model) == (STEM_PARAMS + BLOCK_PARAMS + HEAD_PARAMS, BLOCK_PARAMS + HEAD_PARAMS)
    stem_before, block_before = buffers(model, "stem."), buffers(model, "block.")
    stem_weight = model.stem[0].weight.detach().clone()
    train_step(model)
    assert not model.stem[1].training and model.block[1].training and model.block[3].training
    assert all(torch.equal(stem_before[n], b) for n, b in buffers(model, "stem.").items())
    assert torch.equal(model.stem[0].weight, stem_weight)
    assert not torch.equal(block_before["block.1.running_mean"], model.block[1].running_mean)

    unfreeze_all(model)
    assert count_parameters(model)[1] == count_parameters(model)[0]
    train_step(model, seed=1)
    assert model.stem[1].training
    assert not torch.equal(stem_before["stem.1.running_mean"], model.stem[1].running_mean)


def test_freeze_stage_counts_and_stages_from_patterns() -> None:
    model = TwoStageNet()
    stages = default_stages(model, "fc")
    assert count_parameters(freeze_stages(model, stages, "fc", 0))[1] == HEAD_PARAMS
    assert count_parameters(freeze_stages(model, stages, "fc", -1))[1] == count_parameters(model)[0]
    assert count_parameters(freeze_stages(model, stages, "fc", 5))[1] == count_parameters(model)[0]

    patterns = [("conv", r"stem\.0"), ("norm", r"stem\.1"), ("unused", r"nothing")]
    with pytest.raises(StageError, match=r"match no stage pattern: block\.0\.weight.*block_stages"):
        stages_from_patterns(model, patterns, "fc")  # leftovers are an error, never a hidden stage
    split = stages_from_patterns(model, patterns + [("other", r"nothing")], "fc", unmatched="other")
    by_name = dict(split)
    assert [s for s, _ in split] == ["conv", "norm", "other"]  # empty stages dropped, leftovers where asked
    assert set(by_name["conv"]) == {"stem.0", "stem.0.weight", "stem.0.bias"}
    assert {"stem.1.running_mean", "stem.1.num_batches_tracked", "stem.1.weight"} <= set(by_name["norm"])
    assert "block.1.running_var" in by_name["other"] and "block.0.weight" in by_name["other"]
    members = {n for _, names in split for n in names}
    assert not any(n.startswith("fc") for n in members)  # the head is never a stage
    assert members & {"block.2", "block.3", "pool"} == {"block.2", "block.3", "pool"}  # with their stage


def test_default_stages_put_the_models_own_buffers_first_and_refuse_its_own_parameters() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Linear(4, 2))
    model.register_buffer("projection", torch.ones(3))
    stages = default_stages(model, "2")
    assert [s for s, _ in stages] == ["0", "1"] and "projection" in dict(stages)["0"]
    model.token = nn.Parameter(torch.zeros(4))  # a class token needs an explicit stage
    with pytest.raises(StageError, match="token"):
        default_stages(model, "2")
