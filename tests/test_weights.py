"""Weights: the real torchvision and timm loaders reading offline caches, and local checkpoint files."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torchvision.models import ResNet18_Weights, resnet18

import zoo_core
from zoo_core import WeightsError
from zoo_core.backbones.weights import read_state_dict, torch_hub_checkpoint

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


class NotATensor:
    """Something a pickled checkpoint might carry (an optimizer, a config object …)."""

    def __init__(self) -> None:
        self.lr = 0.1


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """torch.hub downloads fail at once with URLError (as offline); the URLs asked for are recorded."""
    asked: list[str] = []

    def refuse(url: str, *args: object, **kwargs: object) -> None:
        asked.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return asked


# ---- torchvision: torch.hub cache under $TORCH_HOME --------------------------------------------
def test_torchvision_default_weights_come_from_torch_home(zoo_home, no_download) -> None:
    ckpt = torch_hub_checkpoint(ResNet18_Weights.DEFAULT.url)
    assert ckpt == zoo_home.torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    ckpt.parent.mkdir(parents=True)
    saved = resnet18(weights=None).state_dict()
    torch.save(saved, ckpt)

    model = zoo_core.create("resnet18", weights="DEFAULT", num_classes=5)
    assert no_download == []
    assert torch.equal(model.conv1.weight, saved["conv1.weight"])
    assert torch.equal(model.layer4[1].bn2.running_var, saved["layer4.1.bn2.running_var"])
    assert model.fc.out_features == 5 and model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 5)

    same_head = zoo_core.create("resnet18", weights="IMAGENET1K_V1", num_classes=None)
    assert torch.equal(same_head.fc.weight, saved["fc.weight"])  # num_classes=None keeps the 1000-way head


def test_torchvision_offline_without_cache_names_the_expected_path(zoo_home, no_download) -> None:
    expected = zoo_home.torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsError) as err:
        zoo_core.create("resnet18", weights="DEFAULT", num_classes=3)
    msg = str(err.value)
    assert str(expected) in msg and "weights=None" in msg and "URLError" in msg
    assert no_download == [ResNet18_Weights.DEFAULT.url]


def test_torchvision_unknown_weight_tag_lists_the_choices() -> None:
    with pytest.raises(WeightsError, match="IMAGENET1K_V1"):
        zoo_core.create("resnet18", weights="IMAGENET9K_V9")


# ---- timm: the Hugging Face cache under $HF_HOME ----------------------------------------------
def test_hf_cache_is_isolated(zoo_home) -> None:
    import huggingface_hub.constants as c

    assert Path(c.HF_HUB_CACHE) == zoo_home.hf_hub_cache and c.HF_HUB_OFFLINE and c.is_offline_mode()
    assert Path(torch.hub.get_dir()) == zoo_home.torch_home / "hub"


def _put_in_hf_cache(hub_cache: Path, repo: str, state: dict[str, torch.Tensor]) -> Path:
    repo_dir = hub_cache / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(FAKE_COMMIT)
    snapshot = repo_dir / "snapshots" / FAKE_COMMIT
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


def test_timm_default_weights_come_from_the_hf_cache(zoo_home) -> None:
    saved = timm.create_model("test_resnet", pretrained=False).state_dict()
    _put_in_hf_cache(zoo_home.hf_hub_cache, "timm/test_resnet.r160_in1k", saved)

    model = zoo_core.create("timm/test_resnet", weights="DEFAULT", num_classes=4)
    assert torch.equal(model.conv1[0].weight, saved["conv1.0.weight"])
    assert torch.equal(model.layer4[0].conv1.weight, saved["layer4.0.conv1.weight"])
    assert model.fc.out_features == 4 and model(torch.randn(2, 3, 64, 64)).shape == (2, 4)


def test_timm_offline_without_cache_points_at_the_hf_cache(zoo_home) -> None:
    with pytest.raises(WeightsError) as err:
        zoo_core.create("timm/test_resnet", weights="DEFAULT", num_classes=4)
    msg = str(err.value)
    assert str(zoo_home.hf_hub_cache) in msg and "models--timm--test_resnet.r160_in1k" in msg
    assert "weights=None" in msg


def test_timm_without_pretrained_weights_says_so() -> None:
    name = next(n for n in zoo_core.list_backbones("timm/test_*")
                if n not in set(zoo_core.list_backbones("timm/test_*", pretrained=True)))
    with pytest.raises(WeightsError, match="No pretrained weights exist"):
        zoo_core.create(name, weights="DEFAULT")


# ---- local checkpoint files ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return zoo_core.create("timm/test_resnet", weights=None, num_classes=3).state_dict()


def _assert_same(model: torch.nn.Module, state: dict[str, torch.Tensor], skip: str = "\0") -> None:
    own = model.state_dict()
    for k, v in state.items():
        if not k.startswith(skip):
            assert torch.equal(own[k], v), k


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_local_checkpoint_round_trip(tmp_path, tiny_state, suffix) -> None:
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".safetensors":
        save_file(tiny_state, str(path))
    else:
        torch.save(tiny_state, path)
    for weights in (str(path), path):
        model = zoo_core.create("timm/test_resnet", weights=weights, num_classes=3)
        _assert_same(model, tiny_state)


def test_local_checkpoint_in_a_training_container(tmp_path, tiny_state) -> None:
    path = tmp_path / "run.pth"
    torch.save({"model": {f"module.{k}": v for k, v in tiny_state.items()}, "epoch": 3}, path)
    _assert_same(zoo_core.create("timm/test_resnet", weights=path, num_classes=3), tiny_state)


def test_local_checkpoint_with_other_head_size_keeps_a_fresh_head(tmp_path, tiny_state) -> None:
    path = tmp_path / "three_way.pth"
    torch.save(tiny_state, path)
    model = zoo_core.create("timm/test_resnet", weights=path, num_classes=7)
    assert model.fc.weight.shape == (7, 96)
    _assert_same(model, tiny_state, skip="fc.")


def test_local_checkpoint_with_wrong_body_lists_the_bad_keys(tmp_path, tiny_state) -> None:
    bad = dict(tiny_state)
    del bad["layer1.0.conv1.weight"]
    bad["extra.weight"] = torch.zeros(2)
    bad["conv1.0.weight"] = torch.zeros(1, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(WeightsError) as err:
        zoo_core.create("timm/test_resnet", weights=path, num_classes=3)
    msg = str(err.value)
    assert str(path) in msg
    assert "missing keys: layer1.0.conv1.weight" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "mis-shaped keys: conv1.0.weight (1, 3, 3, 3) vs model" in msg


def test_local_checkpoint_of_another_architecture_is_refused(tmp_path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match="do not fit this model"):
        zoo_core.create("timm/test_resnet", weights=path, num_classes=3)


def test_pickled_objects_are_refused(tmp_path, tiny_state) -> None:
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": tiny_state, "optimizer": NotATensor()}, path)
    with pytest.raises(WeightsError, match=r"pickled\.pth': it holds pickled Python objects "
                       r"\(test_weights\.NotATensor\), which are never loaded .* \.safetensors$") as err:
        zoo_core.create("timm/test_resnet", weights=path, num_classes=3)
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)  # never torch's "turn it off"
    with pytest.raises(zoo_core.ZooError, match=r"cannot read checkpoint .*pickled\.pth': it holds pickled") as err:
        zoo_core.load(path)  # a run checkpoint is read the same way
    assert "weights_only" not in str(err.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage" * 10)
    with pytest.raises(WeightsError, match=r"junk\.pt': it is not a torch checkpoint, or it is damaged .*safetensors$"):
        read_state_dict(junk)
    plain = tmp_path / "numbers.pth"
    torch.save({"a": 1, "b": [2, 3]}, plain)
    with pytest.raises(WeightsError, match="does not hold a state dict of tensors"):
        read_state_dict(plain)


def test_missing_local_file(tmp_path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        zoo_core.create("timm/test_resnet", weights=str(tmp_path / "nope.pth"))
