"""When ``auto`` pays for the int8 export: the break-even by backbone size, bf16 first below it where native,
and the export cache (a second split or run of the same backbone and weights does not export again)."""

from __future__ import annotations

import importlib
import json

import torch
import torchvision
from torchvision.datasets import FakeData

from zoo_core import cache, runtime
from zoo_core.backbones import registry
from zoo_core.backbones.adapter import DataConfig
from zoo_core.cache import feature_key, policy

passes = importlib.import_module("zoo_core.cache.passes")
onnxrt = importlib.import_module("zoo_core.cache.onnxrt")
criterion = importlib.import_module("zoo_core.cache.criterion")

SMALL, LARGE = 3_400_000, 25_500_000  # about an EfficientNet-Lite0's and a ResNet-50's backbone


def test_break_even_falls_with_backbone_size_and_decides_by_it(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    small, large = policy.int8_break_even(SMALL, "fp32"), policy.int8_break_even(LARGE, "fp32")
    assert large < small  # the fixed part of the setup weighs more on a small backbone
    n = (small + large) // 2  # pays back for the large backbone, not for the small one
    assert policy.pass_candidates("auto", "cpu", n, LARGE)[0] == (passes.INT8, "int8")
    assert policy.pass_candidates("auto", "cpu", n, SMALL) == [(passes.FOLD, "fp32"), ("eager", "fp32")]
    assert policy.pass_modes("auto", "cpu", n, LARGE) != policy.pass_modes("auto", "cpu", n, SMALL)  # keys differ
    # against native bf16 int8 saves less per image, so it needs more images to pay back
    assert policy.int8_break_even(LARGE, "bf16") > large
    assert policy.int8_break_even(LARGE, "fp16") > 10**12  # no measured saving: never


def test_native_bf16_is_first_below_the_break_even_and_int8_above(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    below = policy.int8_break_even(SMALL, "bf16") - 1
    assert policy.pass_candidates("auto", "cpu", 32, SMALL)[0] == (passes.FOLD, "bf16")
    assert policy.pass_candidates("auto", "cpu", below, SMALL) == [
        (passes.FOLD, "bf16"), (passes.FOLD, "fp32"), ("eager", "fp32")]
    assert policy.pass_candidates("auto", "cpu", below + 1, SMALL)[:2] == [(passes.INT8, "int8"), (passes.FOLD, "bf16")]
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)  # simulated: no native bf16
    assert policy.pass_candidates("auto", "cpu", 32, SMALL) == [(passes.FOLD, "fp32"), ("eager", "fp32")]


def test_backbone_params_leave_the_head_out():
    model = torchvision.models.resnet18(num_classes=3)
    adapter = registry.get_adapter("resnet18")[0]
    assert policy.backbone_params(model, adapter) == sum(p.numel() for p in model.parameters()) - 512 * 3 - 3
    assert policy.backbone_params(model, adapter) == policy.REFERENCE_PARAMS


def test_a_second_split_and_a_later_run_do_not_export_again(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(policy, "int8_break_even", lambda n_params, resolved: 8)
    monkeypatch.setattr(criterion, "TOLERANCE", 1.0)  # what is counted is the export, not the toy's int8 error
    exports = []
    real = onnxrt.save_onnx
    monkeypatch.setattr(onnxrt, "save_onnx", lambda *a, **k: exports.append(a[2]) or real(*a, **k))
    torch.manual_seed(0)
    model, adapter = torchvision.models.resnet18(num_classes=3).eval(), registry.get_adapter("resnet18")[0]
    dc = DataConfig(input_size=(3, 32, 32))

    def extract(split: str, seed: int) -> str:
        ds = FakeData(size=12, image_size=(3, 36, 36), num_classes=3, random_offset=seed)
        key = feature_key(backbone="resnet18", weights=None, data_config=dc, fingerprint="f", split=split,
                          precision="fp32", pass_modes=policy.pass_modes("auto", "cpu", len(ds)))
        fs = cache.extract_features(model, adapter, ds, dc, key=key, batch_size=6, precision="auto",
                                    num_workers=0, progress=False)
        return json.loads((fs.path / "meta.json").read_text())["pass"]

    assert extract("train", 1) == "int8" and len(exports) == 1
    policy._VERDICTS.clear()  # as a new process would: the pass is checked again, its graph read back
    assert extract("val", 2) == "int8" and len(exports) == 1
    assert [r["kind"] for r in cache.cache_summary()].count("onnx") == 1
    with torch.no_grad():
        model.layer4[0].conv1.weight.mul_(1.5)  # other weights: another export
    extract("test", 3)
    assert len(exports) == 2 and [r["kind"] for r in cache.cache_summary()].count("onnx") == 2
    assert cache.clear_cache("onnx") > 0 and not [r for r in cache.cache_summary() if r["kind"] == "onnx"]
