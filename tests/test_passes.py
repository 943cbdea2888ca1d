"""The extraction passes: each within tolerance of eager fp32 and leaving the model unchanged, the fallback
(a pass that differs or fails is dropped and the log says so), the size policy and the pin, the cache key."""

from __future__ import annotations

import importlib
import json
import logging

import pytest
import torch
import torchvision
from torchvision.datasets import FakeData

from zoo_core import cache, onnxgraph, runtime
from zoo_core.backbones import registry
from zoo_core.backbones.adapter import DataConfig
from zoo_core.cache import feature_key, policy
from zoo_core.distributed import DistContext

passes = importlib.import_module("zoo_core.cache.passes")
onnxrt = importlib.import_module("zoo_core.cache.onnxrt")
criterion = importlib.import_module("zoo_core.cache.criterion")
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
    assert criterion.check_pass(approx, exact, folded.name).accepted
    assert criterion.relative_error(approx, exact) < 1e-4
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "forward" not in vars(model.conv1) and "forward" not in vars(model.bn1)
    assert torch.equal(passes.eager_pass(model, adapter, CPU, "fp32").run(x), exact)


def test_onnx_runtime_passes_match_eager_fp32_share_one_export_and_leave_model_unchanged(monkeypatch):
    model, adapter, _ = _model()
    x = torch.randn(12, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exports = []
    real = onnxrt.save_onnx
    monkeypatch.setattr(onnxrt, "save_onnx", lambda *a, **k: exports.append(1) or real(*a, **k))
    exact = passes.eager_pass(model, adapter, CPU, "fp32").run(x)
    graph = onnxrt.OnnxGraph(model, adapter)
    fp32 = passes.onnx_pass(model, adapter, CPU, "fp32", graph=graph)
    int8 = passes.int8_pass(model, adapter, CPU, "fp32", graph=graph)
    f32, f8 = fp32.run(x), int8.run(x)
    assert (fp32.name, fp32.precision, int8.name, int8.precision) == ("onnx", "fp32", "int8", "int8")
    assert f32.dtype == f8.dtype == torch.float32 and f32.shape == f8.shape == exact.shape
    assert criterion.relative_error(f32, exact) < 1e-4  # fp32 in another runtime: rounding only
    err = criterion.relative_error(f8, exact)
    # int8: close (random init on 32 px images: further than real weights, so the bound is the toy's)
    assert 1e-4 < err < 0.05 and 0 < criterion.standardised_error(f8, exact) < 0.5
    assert exports == [1]  # one export for both sessions
    torch.testing.assert_close(int8.run(x[:5]), f8[:5], atol=1e-5, rtol=1e-5)  # any batch size, same rows
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fallback_triggers_and_says_so(caplog):
    model, adapter, x = _model()
    good = passes.eager_pass(model, adapter, CPU, "fp32")
    bad = passes.ForwardPass("fp32+bnfold", "fp32", lambda t: good.run(t) * 2)
    with caplog.at_level(logging.WARNING):
        chosen, feats = policy.choose_pass([bad, good], x, DistContext(), "auto")
    assert chosen is good and torch.equal(feats, good.run(x))
    assert "fp32+bnfold features differ from fp32" in caplog.text and "using fp32" in caplog.text


def test_a_pass_that_fails_is_dropped_with_its_reason(caplog):
    model, adapter, x = _model()
    good = passes.eager_pass(model, adapter, CPU, "fp32")

    def broken(t: torch.Tensor) -> torch.Tensor:
        try:
            raise ValueError("no such op\nthe whole graph")
        except ValueError as exc:
            raise RuntimeError("export failed") from exc

    with caplog.at_level(logging.WARNING):
        chosen, _ = policy.choose_pass([passes.ForwardPass("int8", "int8", broken), good], x, DistContext(), "auto")
    assert chosen is good
    assert "int8 pass failed (ValueError: no such op); using fp32" in caplog.text and "whole graph" not in caplog.text


def test_missing_onnx_runtime_is_no_candidate_and_a_pinned_one_falls_back_with_the_install_line(
        monkeypatch, caplog):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert policy.pass_candidates("auto", "cpu", 10**6)[:2] == [(passes.INT8, "int8"), (passes.ONNX, "fp32")]
    monkeypatch.setattr(onnxgraph, "missing_packages", lambda names=(): ["onnxruntime"])
    assert policy.pass_candidates("auto", "cpu", 10**6) == [(passes.FOLD, "fp32"), ("eager", "fp32")]
    monkeypatch.setattr(onnxrt, "missing_packages", onnxgraph.missing_packages)
    monkeypatch.setenv(policy.PASS_ENV, "int8")
    model, adapter, x = _model()
    candidates = policy.candidate_passes(model, adapter, CPU, "auto", 2)
    with caplog.at_level(logging.WARNING):
        chosen, _ = policy.choose_pass(candidates, x, DistContext(), "auto")
    assert [p.name for p in candidates] == ["int8", "fp32"] and chosen.name == "fp32"
    assert "int8 pass failed (ZooError: the ONNX Runtime passes need onnxruntime: pip install 'backbone-zoo[export]')" \
        in caplog.text


def test_candidates_size_policy_explicit_precision_and_pin(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert policy.pass_candidates("auto", "cpu") == [(passes.FOLD, "fp32"), ("eager", "fp32")]
    small = policy.int8_break_even(policy.REFERENCE_PARAMS, "fp32") - 1
    assert policy.pass_candidates("auto", "cpu", small) == [(passes.FOLD, "fp32"), ("eager", "fp32")]
    assert policy.pass_candidates("auto", "cpu", small + 1) == [
        (passes.INT8, "int8"), (passes.ONNX, "fp32"), (passes.FOLD, "fp32"), ("eager", "fp32")]
    assert policy.pass_candidates("fp32", "cpu", 10**6) == [(passes.FOLD, "fp32"), ("eager", "fp32")]
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert policy.pass_candidates("auto", "cpu")[0] == (passes.FOLD, "bf16")
    assert policy.pass_candidates("auto", "cpu", 10**6) == [
        (passes.INT8, "int8"), (passes.FOLD, "bf16"), (passes.ONNX, "fp32"), (passes.FOLD, "fp32"),
        ("eager", "fp32")]
    for pin, expected in [("eager", [("eager", "fp32")]), ("bnfold", [(passes.FOLD, "bf16"), (passes.FOLD, "fp32"),
                                                                      ("eager", "fp32")]),
                          ("ONNX", [(passes.ONNX, "fp32"), ("eager", "fp32")]),
                          ("int8", [(passes.INT8, "int8"), ("eager", "fp32")]), ("auto", None)]:
        monkeypatch.setenv(policy.PASS_ENV, pin)
        got = policy.pass_candidates("auto", "cpu", 3)
        assert got == (expected or policy.pass_candidates("auto", "cpu")), pin
    monkeypatch.setenv(policy.PASS_ENV, "compile")
    with pytest.raises(runtime.ZooError, match="BACKBONE_ZOO_PASS='compile' is not a pass mode; use auto, int8"):
        policy.pass_candidates("auto", "cpu")


def test_cache_key_includes_pass_mode(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    dc = DataConfig(input_size=(3, 64, 64))
    args = dict(backbone="resnet18", weights=None, data_config=dc, fingerprint="f", split="train", precision="fp32")
    k1, k2 = feature_key(**args), feature_key(**args, pass_modes=("eager",))
    assert k1.parts["pass"] == "+".join(passes.PASS_MODES) and k2.parts["pass"] == "eager" and k1 != k2
    # what a run keys its features with: auto on a large split may use int8, explicit fp32 never does
    auto = policy.pass_modes("auto", "cpu", 10**6)
    assert auto == (passes.INT8, passes.ONNX, passes.FOLD, "eager")
    assert policy.pass_modes("fp32", "cpu", 10**6) == policy.pass_modes("auto", "cpu", 10) == (passes.FOLD, "eager")
    assert feature_key(**args, pass_modes=auto) != feature_key(**args, pass_modes=policy.pass_modes("fp32", "cpu"))


def test_extraction_drops_int8_for_the_onnx_pass_when_it_is_too_far_and_records_the_pass(monkeypatch, caplog):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(policy, "int8_break_even", lambda n_params, resolved: 16)
    monkeypatch.setattr(criterion, "TOLERANCE", 1e-3)  # int8 too far, fp32 in ONNX Runtime close enough
    model, adapter, _ = _model()
    ds = FakeData(size=20, image_size=(3, 40, 40), num_classes=3, random_offset=3)
    dc = DataConfig(input_size=(3, 32, 32))
    key = feature_key(backbone="resnet18", weights=None, data_config=dc, fingerprint="f", split="train",
                      precision="fp32", pass_modes=policy.pass_modes("auto", "cpu", len(ds)))
    with caplog.at_level(logging.INFO, logger="zoo_core.cache"):
        fs = cache.extract_features(model, adapter, ds, dc, key=key, batch_size=8, precision="auto", num_workers=0,
                                    progress=False)
    assert "int8 features differ from fp32" in caplog.text and "using onnx" in caplog.text
    assert "onnx features within" in caplog.text
    meta = json.loads((fs.path / "meta.json").read_text())
    assert meta["pass"] == "onnx" and meta["precision"] == "fp32" and meta["parts"]["pass"] == "int8+onnx+bnfold+eager"
    ref = cache.extract_features(model, adapter, ds, dc, batch_size=8, precision="fp32", num_workers=0, progress=False)
    torch.testing.assert_close(fs.features, ref.features, atol=1e-4, rtol=1e-4)


def test_the_pass_is_checked_once_per_model_and_weights(monkeypatch, caplog):
    """The second split (or a check view) of the same backbone reuses the verdict: no second check, no warning
    repeated; other weights are checked again."""
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    model, adapter, _ = _model()
    dc = DataConfig(input_size=(3, 32, 32))
    checks = []
    real_check = criterion.check_pass
    monkeypatch.setattr(criterion, "check_pass", lambda *a, **k: checks.append(a[2]) or real_check(*a, **k))

    def extract(seed: int) -> cache.FeatureSet:
        ds = FakeData(size=10, image_size=(3, 40, 40), num_classes=3, random_offset=seed)
        key = feature_key(backbone="resnet18", weights=None, data_config=dc, fingerprint=f"f{seed}", split="train",
                          precision="fp32", pass_modes=policy.pass_modes("auto", "cpu", len(ds)))
        return cache.extract_features(model, adapter, ds, dc, key=key, batch_size=4, precision="auto",
                                      num_workers=0, progress=False)

    first = extract(1)
    assert checks == ["fp32+bnfold"]
    second = extract(2)
    assert checks == ["fp32+bnfold"]  # the same model and weights: the verdict is reused
    assert json.loads((second.path / "meta.json").read_text())["pass"] == "fp32+bnfold"
    assert not torch.equal(first.features, second.features)
    with torch.no_grad():
        model.layer4[0].conv1.weight.mul_(1.5)  # other weights: checked again
    extract(3)
    assert checks == ["fp32+bnfold", "fp32+bnfold"]
    record = json.loads((second.path / "meta.json").read_text())["pass_check"]  # the reused verdict, recorded
    assert [(r["pass"], r["accepted"], r["criterion"]) for r in record] == [
        ("fp32+bnfold", True, criterion.CRITERION)] and 0 <= record[0]["error"] < 1e-3
