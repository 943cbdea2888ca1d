"""The BatchNorm-folded extraction pass: within tolerance of eager fp32, model untouched, fallback, cache key."""

from __future__ import annotations

import importlib
import logging

import torch
import torchvision

from zoo_core import registry, runtime
from zoo_core.adapter import DataConfig
from zoo_core.cache import feature_key
from zoo_core.distributed import DistContext

passes = importlib.import_module("zoo_core.cache.passes")
CPU = torch.device("cpu")


def _model() -> tuple[torch.nn.Module, object, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    for m in model.modules():  # non-trivial statistics, so folding really changes the weights
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model, registry.get_adapter("resnet18")[0], torch.randn(2, 3, 64, 64)


def test_folded_pass_matches_eager_fp32_and_leaves_model_unchanged():
    model, adapter, x = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exact = passes.eager_pass(model, adapter, CPU, "fp32").run(x)
    folded = passes.folded_pass(model, adapter, CPU, "fp32")
    approx = folded.run(x)
    assert runtime.check_pass(approx, exact, folded.name).accepted
    assert runtime.relative_error(approx, exact) < 1e-4
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "forward" not in vars(model.conv1) and "forward" not in vars(model.bn1)
    assert torch.equal(passes.eager_pass(model, adapter, CPU, "fp32").run(x), exact)


def test_fallback_triggers_and_says_so(caplog):
    model, adapter, x = _model()
    good = passes.eager_pass(model, adapter, CPU, "fp32")
    bad = passes.ForwardPass("fp32+bnfold", "fp32", lambda t: good.run(t) * 2)
    with caplog.at_level(logging.WARNING):
        chosen, feats = passes.choose_pass([bad, good], x, DistContext(), "auto")
    assert chosen is good and torch.equal(feats, good.run(x))
    assert "fp32+bnfold features differ from fp32" in caplog.text and "using fp32" in caplog.text


def test_candidates_put_folding_first_and_eager_last(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert runtime.pass_candidates("auto", "cpu") == [(runtime.FOLD, "fp32"), ("eager", "fp32")]
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.pass_candidates("auto", "cpu")[-1] == ("eager", "fp32")
    assert runtime.pass_candidates("auto", "cpu")[0] == (runtime.FOLD, "bf16")


def test_cache_key_includes_pass_mode():
    dc = DataConfig(input_size=(3, 64, 64))
    args = dict(backbone="resnet18", weights=None, data_config=dc, fingerprint="f", split="train", precision="fp32")
    k1, k2 = feature_key(**args), feature_key(**args, pass_modes=("eager",))
    assert k1.parts["pass"] == "+".join(runtime.PASS_MODES) and k2.parts["pass"] == "eager" and k1 != k2
