"""``--strategy auto`` on generated data with a known answer (zoo_core.training.surgical, .prefix): a toy
three-stage CNN pretrained on textures in the red channel, then shown the same textures in the blue channel
(an input-level shift: only the colour mixer, the first stage, needs to change) or new classes that its top
features already separate (a label-level change: the probe is enough). The frozen prefix's cached forward
changes no trial's result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers_toys import StagedAdapter, StagedCNN, plugin_of, texture_images
from PIL import Image

import zoo_core
from zoo_core.training import prefix

KNOBS = dict(strategy="auto", image_size=32, batch_size=8, lr=0.01, backbone_lr_mult=1, epochs=1, augment=False,
             progress=False, device="cpu", seed=0)


def _folder(root: Path, images: torch.Tensor, names: list[str]) -> Path:
    for k, (img, name) in enumerate(zip(images, names)):
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / name / f"{k:03d}.png")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The source weights (4 textures in red, loud noise elsewhere) and the two target folders."""
    root = tmp_path_factory.mktemp("surgical")
    torch.manual_seed(0)
    x, y = texture_images(100, 4, channel=0, seed=0)
    x = (x.float() / 255 - 0.5) / 0.5
    net = StagedCNN(4)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(300):
        idx = torch.randint(0, len(y), (32,))
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (net(x).argmax(1) == y).float().mean() > 0.95  # the source task is learnt
    torch.save(net.state_dict(), root / "source.pth")
    xs, ys = texture_images(60, 4, channel=2, seed=1)
    xl, yl = texture_images(60, 4, channel=0, seed=2)
    return {"weights": root / "source.pth", "shift": _folder(root / "shift", xs, [f"t{int(c)}" for c in ys]),
            "label": _folder(root / "label", xl, ["lines" if c < 2 else "grid" for c in yl])}


@pytest.fixture
def surgtoy(add_plugin: Any) -> None:
    add_plugin(plugin_of(StagedAdapter()), name="surgtoy")


def auto(world: dict[str, Path], name: str, out: Path) -> dict[str, Any]:
    r = zoo_core.train("surg_cnn", world[name], weights=str(world["weights"]), out_dir=out, **KNOBS)
    return json.loads((r.run_dir / "config.json").read_text())["surgical"]


def test_an_input_level_shift_makes_auto_tune_the_first_stage(world: dict, surgtoy: None, tmp_path: Path) -> None:
    rec = auto(world, "shift", tmp_path)
    by = {t["name"]: t for t in rec["trials"]}
    assert rec["beat_probe"] and 0 in rec["chosen"]["stages"] and rec["chosen"]["name"] != "last-half"
    assert by["first"]["val_acc"] > by["last"]["val_acc"] + 0.1 and by["first"]["val_acc"] > by["probe"]["val_acc"]


def test_a_label_level_change_keeps_the_probe_and_the_last_stage(world: dict, surgtoy: None, tmp_path: Path) -> None:
    rec = auto(world, "label", tmp_path)
    assert rec["trials"][0]["val_acc"] > 0.95  # the top features already separate the new classes
    assert rec["chosen"]["name"] == "last" and not rec["beat_probe"]


def test_the_cached_frozen_prefix_changes_no_trial(world: dict, surgtoy: None, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cached = auto(world, "shift", tmp_path / "a")
    assert cached["prefix_cached"] == [1, 2]  # last-half and last skip the stages below them
    monkeypatch.setattr(prefix, "MAX_BYTES", 0)  # no boundary fits: every trial runs the whole forward
    whole = auto(world, "shift", tmp_path / "b")
    assert whole["prefix_cached"] == []
    for a, b in zip(cached["trials"], whole["trials"]):
        assert a["name"] == b["name"] and a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4, abs=1e-6)


def test_resnet_boundaries_reproduce_the_whole_forward() -> None:
    model = zoo_core.create("resnet18", num_classes=3, weights=None).eval()
    stages = zoo_core.backbones.registry.get_adapter("resnet18")[0].stages(model)
    n = len(stages)
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    cache = prefix.build(model, stages, [n - 1, n // 2, 0], {"train": x[:4], "val": x[4:]},
                         lambda t: t.float() / 255, torch.no_grad, 4)
    assert cache.has(n - 1) and cache.has(n // 2) and not cache.has(0)
    with torch.no_grad():
        whole = model(x[4:].float() / 255)
        cache.select(cache.rows(n - 1, "val"))
        with cache.skipping(model, n - 1):
            short = model(torch.zeros(2, 3, 32, 32))
    assert torch.allclose(whole, short, atol=1e-5)
    assert "forward" not in vars(model.conv1)  # the short cut is undone
