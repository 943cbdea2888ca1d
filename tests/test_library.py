"""The library as another project uses it: every public name visible, feature widths, filtering by metadata."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
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
    assert set(zoo_core._LAZY) <= set(zoo_core.__all__)  # the literal __all__ keeps up with the lazy table


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


def test_features_of_a_folder_are_the_feature_extraction_runs_cached_features(tmp_path, zoo_home) -> None:
    from helpers_images import make_folder

    folder = make_folder(tmp_path / "data", num_classes=2, per_class=6, size=40)
    opts = {"weights": None, "image_size": 32, "batch_size": 8, "num_workers": 0}
    zoo_core.train("resnet18", folder, strategy="feature-extraction", epochs=1, out_dir=str(tmp_path / "runs"),
                   progress=False, **opts)
    entries = sorted((zoo_home.zoo_cache / "features").glob("*/features.npy"))
    assert entries
    feats, labels = zoo_core.features("resnet18", folder, **opts)
    assert sorted((zoo_home.zoo_cache / "features").glob("*/features.npy")) == entries  # read back, none added
    cached = [np.load(e) for e in entries]
    assert any(c.shape == feats.shape and np.array_equal(c, feats) for c in cached)
    assert feats.shape == (len(labels), zoo_core.info("resnet18").feature_dim) and set(labels) == {0, 1}

    images = sorted((folder / "class0").iterdir())[:2]
    from_images = zoo_core.features("resnet18", images, **opts)  # in memory, the same preprocessing
    assert from_images.shape == (2, 512) and np.isfinite(from_images).all()


def test_transform_follows_the_tensor_convention_and_refuses_the_ambiguous_case() -> None:
    from PIL import Image

    pre = zoo_core.transform("resnet18", image_size=32)
    u8 = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8)
    pil = Image.fromarray(u8.permute(1, 2, 0).numpy())
    assert pre(pil).shape == (3, 32, 32) and torch.allclose(pre(pil), pre(u8), atol=1e-5)
    assert torch.allclose(pre(u8.float() / 255), pre(u8), atol=1e-5)
    assert pre.batch(torch.stack([u8, u8])).shape == (2, 3, 32, 32)
    for bad, why in ((u8.float(), "0–1"), (pre(u8), "normalised"), ((u8 > 127).to(torch.uint8), "cast to uint8")):
        with pytest.raises(zoo_core.DataError, match=why):
            pre(bad)


def test_classifier_and_predict_give_one_shape_for_paths_pil_and_tensors(tmp_path) -> None:
    from helpers_images import make_folder
    from PIL import Image

    from zoo_core.rundir import save_checkpoint

    torch.manual_seed(0)
    model = zoo_core.create("resnet18", num_classes=2, weights=None)
    dc = zoo_core.DataConfig(input_size=(3, 32, 32))
    save_checkpoint(tmp_path / "run" / "best.pt", {"model": model.state_dict(), "classes": ["a", "b"],
                                                   "backbone": "resnet18", "data_config": dc.to_dict(), "num_classes": 2})
    path = sorted((make_folder(tmp_path / "imgs", num_classes=1, per_class=1, size=40) / "class0").iterdir())[0]
    pil = Image.open(path).convert("RGB")
    tensor = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
    clf = zoo_core.load(tmp_path / "run")
    by_clf = clf.predict([path, pil, tensor], topk=2)
    by_fn = zoo_core.predict(tmp_path / "run", [path, pil, tensor], topk=2)
    assert [r["image"] for r in by_clf] == [r["image"] for r in by_fn] == [str(path), 1, 2]
    assert [r["top"] for r in by_clf] == [r["top"] for r in by_fn]
    assert by_clf[0]["top"] == by_clf[1]["top"] == by_clf[2]["top"] and {t["label"] for t in by_clf[0]["top"]} == {"a", "b"}
    assert clf.predict(tensor[None])[0]["top"] == clf.predict(pil)[0]["top"]


def test_train_without_progress_prints_nothing_and_logs_its_lines(tmp_path, capfd, caplog) -> None:
    import logging

    from helpers_images import make_folder

    folder = make_folder(tmp_path / "data", num_classes=2, per_class=4, size=32)
    opts = {"weights": None, "image_size": 32, "batch_size": 4, "num_workers": 0, "out_dir": str(tmp_path / "runs")}
    zoo_core.train("resnet18", folder, strategy="feature-extraction", epochs=1, progress=False, **opts)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    with caplog.at_level(logging.INFO, logger="backbone_zoo"):  # an application that configures logging
        zoo_core.train("resnet18", folder, strategy="feature-extraction", epochs=1, progress=False, **opts)
    assert any(r.getMessage().startswith("zoo train: done.") for r in caplog.records)
    assert capfd.readouterr() == ("", "")
