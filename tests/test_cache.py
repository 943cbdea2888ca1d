"""Feature cache and shared decoding (zoo_core.cache): correctness, hits, misses, corruption, pass checks."""

from __future__ import annotations

import importlib
import json
import logging
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import FakeData

import zoo_core
from zoo_core import cache, data, runtime
from zoo_core.backbones.adapter import DataConfig
from zoo_core.cache import policy
from zoo_core.distributed import DistContext

criterion = importlib.import_module("zoo_core.cache.criterion")

CFG = DataConfig(input_size=(3, 32, 32))


class Counting(Dataset):
    """Wraps a dataset and counts how many items were decoded."""

    def __init__(self, base: Dataset) -> None:
        self.base, self.reads = base, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.base[i]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKBONE_ZOO_CACHE", str(tmp_path / "zoo-cache"))
    return tmp_path / "zoo-cache"


@pytest.fixture
def ds() -> Counting:
    return Counting(FakeData(size=24, image_size=(3, 40, 40), num_classes=3, random_offset=7))


def make_model(seed: int = 0, name: str = "resnet18"):
    torch.manual_seed(seed)
    model = zoo_core.create(name, num_classes=3, weights=None)
    adapter, _ = zoo_core.get_adapter(name)
    adapter.freeze(model, 0)
    return model, adapter


def key_for(cfg: DataConfig = CFG, **over) -> str:
    parts = dict(backbone="resnet18", weights=None, data_config=cfg, fingerprint="fp-1", split="train",
                 precision="fp32")
    parts.update(over)
    return cache.feature_key(**parts)


def extract(model, adapter, ds, key=None, cfg=CFG, **kw):
    kw.setdefault("precision", "fp32")
    return cache.extract_features(model, adapter, ds, cfg, key=key, batch_size=8, num_workers=0, progress=False,
                               **kw)


def reference_features(model, adapter, ds, cfg=CFG) -> torch.Tensor:
    """Plain eval-mode forward, no cache, no channels-last: what the features must equal."""
    tf = data.eval_transform(cfg)
    x = torch.stack([tf(ds.base[i][0]) for i in range(len(ds))])
    model.eval()
    with torch.no_grad():
        return adapter.features(model, data.normalize(x, cfg)).float()


def fit_head(feats: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    torch.manual_seed(0)
    head = nn.Linear(feats.shape[1], 3)
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(head(feats), labels).backward()
        opt.step()
    acc = (head(feats).argmax(1) == labels).float().mean().item()
    return head.weight.detach().clone(), acc


def test_cached_and_uncached_give_same_features_and_head(ds, cache_dir):
    model, adapter = make_model()
    plain = extract(model, adapter, ds)
    cached = extract(model, adapter, ds, key=key_for())
    assert plain.path is None and not plain.from_cache
    assert cached.path is not None and cached.path.is_relative_to(cache_dir) and not cached.from_cache
    ref = reference_features(model, adapter, ds)
    assert plain.features.shape == (24, 512) and plain.features.dtype == torch.float32
    torch.testing.assert_close(plain.features, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached.features, plain.features, atol=1e-6, rtol=1e-6)
    labels = torch.tensor([int(ds.base[i][1]) for i in range(len(ds))])
    assert torch.equal(plain.labels, labels) and torch.equal(cached.labels, labels)
    reread = extract(model, adapter, ds, key=key_for())
    assert reread.from_cache
    w_plain, acc_plain = fit_head(plain.features, plain.labels)
    w_cached, acc_cached = fit_head(reread.features.clone(), reread.labels)
    torch.testing.assert_close(w_cached, w_plain, atol=1e-5, rtol=1e-5)
    assert acc_cached == pytest.approx(acc_plain)


def test_second_call_hits_cache_without_backbone_forward(ds):
    model, adapter = make_model()
    first = extract(model, adapter, ds, key=key_for())
    assert ds.reads == 24

    def boom(*a, **k):
        raise AssertionError("backbone forward ran on a cache hit")

    model.forward = boom
    second = extract(model, adapter, ds, key=key_for())
    assert second.from_cache and second.path == first.path
    assert ds.reads == 24  # no image decoded either
    assert torch.equal(second.features, first.features) and torch.equal(second.labels, first.labels)


def test_extraction_runs_eval_inference_channels_last_and_restores(ds):
    model, adapter = make_model()
    model.train()
    seen = []

    def spy(module, args):
        cl = torch.channels_last
        seen.append((module.training, model.training, torch.is_inference_mode_enabled(),
                     args[0].is_contiguous(memory_format=cl), module.weight.is_contiguous(memory_format=cl)))

    handle = model.conv1.register_forward_pre_hook(spy)
    try:
        extract(model, adapter, ds)
    finally:
        handle.remove()
    assert seen and all(s == (False, False, True, True, True) for s in seen)
    assert model.training and model.conv1.weight.is_contiguous()  # mode and layout restored


def test_key_depends_on_every_part(tmp_path):
    base = key_for()
    assert base == key_for() and len(base) == 32
    ckpt = tmp_path / "w.pth"
    torch.save({"a": torch.zeros(3)}, ckpt)
    ckpt_key = key_for(weights=str(ckpt))
    others = [
        key_for(fingerprint="fp-2"), key_for(weights="DEFAULT"), key_for(weights="IMAGENET1K_V1"), ckpt_key,
        key_for(cfg=CFG.with_image_size(48)), key_for(split="val"), key_for(precision="bf16"),
        key_for(backbone="resnet34"), key_for(cfg=DataConfig(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5))),
    ]
    assert len({base, *others}) == len(others) + 1
    assert key_for(weights="None") == base  # the trainer passes str(None)
    torch.save({"a": torch.ones(3)}, ckpt)  # same size, new content
    assert key_for(weights=str(ckpt)) != ckpt_key
    assert base.parts["fingerprint"] == "fp-1"


@pytest.mark.parametrize("change", ["fingerprint", "image_size", "weights"])
def test_changed_inputs_miss_the_cache(ds, change):
    model, adapter = make_model()
    assert not extract(model, adapter, ds, key=key_for()).from_cache
    cfg = CFG.with_image_size(40) if change == "image_size" else CFG
    key = {"fingerprint": key_for(fingerprint="fp-2"), "image_size": key_for(cfg=cfg),
           "weights": key_for(weights="IMAGENET1K_V1")}[change]
    again = extract(model, adapter, ds, key=key, cfg=cfg)
    assert not again.from_cache and ds.reads == 48
    assert len([r for r in cache.cache_summary() if r["kind"] == "features"]) == 2


def test_other_backbone_weights_under_same_key_are_not_served(ds, caplog):
    model, adapter = make_model(seed=0)
    first = extract(model, adapter, ds, key=key_for())
    other, _ = make_model(seed=1)  # same name, weights=None, different random init
    with caplog.at_level(logging.INFO, logger="zoo_core.cache"):
        second = extract(other, adapter, ds, key=key_for())
    assert not second.from_cache and "other backbone weights" in caplog.text
    assert not torch.allclose(second.features, first.features)
    assert extract(other, adapter, ds, key=key_for()).from_cache
    model.fc.weight.data.add_(1.0)  # the head is not part of the backbone fingerprint
    assert not extract(model, adapter, ds, key=key_for()).from_cache  # rebuilt for seed 0 again
    assert extract(model, adapter, ds, key=key_for()).from_cache


def _truncate(p):
    p.write_bytes(p.read_bytes()[:-100])


def _garbage_same_size(p):
    b = bytearray(p.read_bytes())
    b[-64:] = b"\x7f" * 64
    p.write_bytes(bytes(b))


@pytest.mark.parametrize("damage", [
    ("features.npy", _truncate), ("features.npy", _garbage_same_size),
    ("features.npy", lambda p: p.write_bytes(b"not a numpy file")),
    ("labels.npy", lambda p: p.unlink()), ("meta.json", lambda p: p.write_text("{broken")),
])
def test_corrupt_cache_is_detected_and_rebuilt(ds, caplog, damage):
    fname, hurt = damage
    model, adapter = make_model()
    first = extract(model, adapter, ds, key=key_for())
    good = first.features.clone()
    hurt(first.path / fname)
    with caplog.at_level(logging.WARNING, logger="zoo_core.cache"):
        rebuilt = extract(model, adapter, ds, key=key_for())
    assert not rebuilt.from_cache and ds.reads == 48
    assert "corrupt" in caplog.text and fname in caplog.text
    assert torch.equal(rebuilt.features, good)
    assert extract(model, adapter, ds, key=key_for()).from_cache


def test_failed_extraction_leaves_no_entry(ds, cache_dir):
    model, adapter = make_model()

    class Broken(Counting):
        def __getitem__(self, i):
            if i == 20:
                raise OSError("disk went away")
            return super().__getitem__(i)

    with pytest.raises(OSError):
        extract(model, adapter, Broken(ds.base), key=key_for())
    leftovers = list((cache_dir / "features").iterdir())
    assert leftovers == []
    assert not extract(model, adapter, ds, key=key_for()).from_cache


def test_pixel_cache_decodes_once_per_input_size(ds, cache_dir):
    pix = cache.PixelCache.build(ds, CFG, fingerprint="fp-1", split="train", num_workers=0, progress=False)
    assert ds.reads == 24 and not pix.from_cache and len(pix) == 24 and pix.image_size == (32, 32)
    assert pix.images.dtype == np.uint8 and pix.images.shape == (24, 3, 32, 32)
    a, adapter_a = make_model(seed=0)
    b, adapter_b = make_model(seed=1, name="timm/test_resnet")
    for model, adapter in ((a, adapter_a), (b, adapter_b)):  # two backbones, same input size
        again = cache.PixelCache.build(ds, CFG, fingerprint="fp-1", split="train", num_workers=0, progress=False)
        assert again.from_cache and again.path == pix.path
        via_pixels = extract(model, adapter, None, pixels=again)
        torch.testing.assert_close(via_pixels.features, reference_features(model, adapter, ds),
                                   atol=1e-4, rtol=1e-4)
    assert ds.reads == 24  # decoded once for the cache; the extractions read pixels, not images
    bigger = cache.PixelCache.build(ds, CFG.with_image_size(40), fingerprint="fp-1", split="train",
                                 num_workers=0, progress=False)
    assert not bigger.from_cache and bigger.path != pix.path and bigger.image_size == (40, 40)
    with pytest.raises(zoo_core.ZooError, match="pixel cache"):
        extract(a, adapter_a, None, pixels=bigger)  # 40 px pixels for a 32 px config


def test_pixel_dataset_items_and_loader(ds):
    pix = cache.PixelCache.build(ds, CFG, fingerprint="fp-1", split="train", num_workers=0, progress=False)
    pds = pickle.loads(pickle.dumps(pix.as_dataset()))  # workers get a picklable, lazily mapped dataset
    x, y = pds[5]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and y == int(ds.base[5][1])
    assert torch.equal(x, data.eval_transform(CFG)(ds.base[5][0]))
    xb, yb = next(iter(DataLoader(pds, batch_size=6, shuffle=False)))
    assert torch.equal(xb[5], x) and yb.tolist() == [int(ds.base[i][1]) for i in range(6)]


def test_corrupt_pixel_cache_is_rebuilt(ds, caplog):
    pix = cache.PixelCache.build(ds, CFG, fingerprint="fp-1", split="train", num_workers=0, progress=False)
    _truncate(pix.path / "pixels.npy")
    with caplog.at_level(logging.WARNING, logger="zoo_core.cache"):
        again = cache.PixelCache.build(ds, CFG, fingerprint="fp-1", split="train", num_workers=0, progress=False)
    assert not again.from_cache and ds.reads == 48 and "corrupt" in caplog.text


def test_clear_cache_and_summary(ds, cache_dir):
    model, adapter = make_model()
    extract(model, adapter, ds, key=key_for())
    cache.PixelCache.build(ds, CFG, fingerprint="fp-1", split="train", num_workers=0, progress=False)
    rows = cache.cache_summary()
    assert {r["kind"] for r in rows} == {"features", "pixels"}
    feat = next(r for r in rows if r["kind"] == "features")
    assert feat["backbone"] == "resnet18" and feat["n"] == 24 and feat["dim"] == 512 and feat["size_bytes"] > 24 * 512 * 4
    freed = cache.clear_cache("pixels")
    assert freed > 24 * 3 * 32 * 32 and [r["kind"] for r in cache.cache_summary()] == ["features"]
    assert cache.clear_cache("all") >= 24 * 512 * 4
    assert cache.cache_summary() == [] and not any(p.is_file() for p in cache_dir.rglob("*"))
    assert cache.clear_cache() == 0
    with pytest.raises(zoo_core.ZooError, match="features, pixels, onnx or all"):
        cache.clear_cache("weights")


def test_cache_root_default(monkeypatch, tmp_path):
    monkeypatch.delenv("BACKBONE_ZOO_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_root() == tmp_path / ".cache" / "backbone-zoo"


def test_resolve_precision(monkeypatch):
    assert runtime.resolve_precision("fp32", "cpu") == "fp32"
    assert runtime.resolve_precision("bfloat16", "cpu") == "bf16"
    assert runtime.resolve_precision("fp16", "cuda") == "fp16"
    with pytest.raises(zoo_core.ZooError, match="precision"):
        runtime.resolve_precision("int8", "cpu")
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert runtime.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.resolve_precision("auto", "cpu") == "bf16"
    assert runtime.resolve_precision("auto", "meta") == "fp32"


def test_bf16_features_close_to_fp32_and_auto_falls_back(ds, monkeypatch, caplog):
    model, adapter = make_model()
    fp32 = extract(model, adapter, ds, precision="fp32").features
    bf16 = extract(model, adapter, ds, precision="bf16").features
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    assert criterion.relative_error(bf16, fp32) < 0.05
    monkeypatch.setattr(runtime, "resolve_precision", lambda p, d: "bf16")  # as on a CPU with native bf16
    monkeypatch.setattr(criterion, "TOLERANCE", 0.0)  # and bf16 judged too inaccurate
    with caplog.at_level(logging.WARNING, logger="zoo_core.cache"):
        auto = extract(model, adapter, ds, precision="auto").features
    assert "using fp32" in caplog.text
    # auto fell back to eager fp32; the explicit fp32 run may use the BatchNorm-folded pass (rounding apart)
    torch.testing.assert_close(auto, fp32, atol=1e-5, rtol=1e-5)


def test_auto_keeps_bf16_when_close_and_reuses_the_checked_batch(ds, monkeypatch, caplog):
    model, adapter = make_model()
    bf16 = extract(model, adapter, ds, precision="bf16").features
    calls = []
    handle = model.conv1.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))
    monkeypatch.setattr(runtime, "resolve_precision", lambda p, d: "bf16")  # as on a CPU with native bf16
    try:
        with caplog.at_level(logging.INFO, logger="zoo_core.cache"):
            auto = extract(model, adapter, ds, key=key_for(precision="bf16"), precision="auto")
    finally:
        handle.remove()
    assert "bf16+bnfold features within" in caplog.text and "using fp32" not in caplog.text  # folded bf16 kept
    torch.testing.assert_close(auto.features, bf16, atol=1e-6, rtol=1e-6)
    # 3 batches + the fp32 reference of the first (the check's bf16 run is kept), and the folded pass's one
    # one-image probe that finds its conv→BatchNorm pairs
    assert [c for c in calls if c != 1] == [8, 8, 8, 8] and calls.count(1) == 1
    meta = json.loads((auto.path / "meta.json").read_text())
    assert meta["precision"] == "bf16" and meta["n"] == 24 and "world_size" not in meta


def test_choose_pass_checks_candidates_against_the_last():
    x = torch.linspace(1, 2, 12).reshape(3, 4)
    ref = cache.ForwardPass("fp32", "fp32", lambda t: t.clone())
    near = cache.ForwardPass("near", "bf16", lambda t: t * 1.001)
    far = cache.ForwardPass("far", "bf16", lambda t: t * 2)
    nan = cache.ForwardPass("nan", "bf16", lambda t: t * float("nan"))
    ctx = DistContext()
    chosen, f = cache.choose_pass([far, nan, near, ref], x, ctx, "auto")
    assert chosen is near and torch.equal(f, x * 1.001)
    chosen, f = cache.choose_pass([far, nan, ref], x, ctx, "auto")
    assert chosen is ref and torch.equal(f, x)
    assert cache.choose_pass([far], x, ctx, "bf16") == (far, None)  # a single candidate is not checked
    assert cache.choose_pass([far, ref], None, ctx, "auto") == (far, None)  # no batch on this rank: no veto


def test_precision_candidates_and_check_pass(monkeypatch):
    assert policy.precision_candidates("fp32", "cpu") == ["fp32"]
    assert policy.precision_candidates("bf16", "cpu") == ["bf16"]
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert policy.precision_candidates("auto", "cpu") == ["bf16", "fp32"]
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert policy.precision_candidates("AUTO", "cpu") == ["fp32"]
    exact = torch.ones(4, 8)  # no between-image spread: judged by the relative L2 error
    ok = criterion.check_pass(exact * 1.01, exact, "bf16")
    assert ok.accepted and ok.error == pytest.approx(0.01, rel=1e-3) and "within" in ok.message
    assert ok.criterion == "relative_l2"
    bad = criterion.check_pass(exact * 1.1, exact, "bf16")
    assert not bad.accepted and "differ from fp32" in bad.message
    assert not criterion.check_pass(exact * float("inf"), exact, "bf16").accepted
    spread = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    assert not criterion.check_pass(spread * float("nan"), spread, "bf16").accepted
