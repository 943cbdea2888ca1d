"""``zoo export`` / ``zoo_core.export``: ONNX and TorchScript files of a torchvision resnet and a timm ViT that
reproduce PyTorch's logits (checked at export time, and again in a fresh process), a sidecar JSON whose
preprocessing recipe rebuilds the model's input, and one-line errors for what cannot be exported."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_cli import one_line_error, run
from helpers_images import make_folder, write_image
from torch import nn
from torchvision.transforms import InterpolationMode, v2

import zoo_core
from zoo_core import exporting
from zoo_core.backbones.adapter import DataConfig
from zoo_core.inference import ZooClassifier

pytestmark = pytest.mark.usefixtures("skip_run_plots")


def importable(*names: str) -> bool:
    try:
        for name in names:
            importlib.import_module(name)
    except ImportError:
        return False
    return True


HAS_ORT = importable("onnxruntime")
HAS_EXPORTER = importable("onnx", "onnxscript")
NO_ORT = "onnxruntime is not installed (pip install 'backbone-zoo[export]'): the ONNX file was not run"

FRESH = r"""
import sys
import numpy as np
x = np.load(sys.argv[1])
for i, (fmt, model) in enumerate(a.split("=", 1) for a in sys.argv[3:]):
    if fmt == "onnx":
        import onnxruntime as ort
        y = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    else:
        import torch
        y = torch.jit.load(model)(torch.from_numpy(x)).detach().numpy()
    np.save(f"{sys.argv[2]}{i}.npy", y)
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Finished 3-class feature-extraction runs of resnet18 and timm/test_vit at 32 px (random init)."""
    root = tmp_path_factory.mktemp("export")
    data = make_folder(root / "data", num_classes=3, per_class=6)
    return {b: zoo_core.train(b, data, weights=None, image_size=32, progress=False, out_dir=root / "runs",
                              run_name=b.replace("/", "_")).run_dir
            for b in ("resnet18", "timm/test_vit")}


def fresh_process(models: dict[str, Path], batch: torch.Tensor, tmp_path: Path) -> dict[str, np.ndarray]:
    """Each exported model's output on ``batch`` (format → file), computed by one new Python process that
    imports no zoo_core."""
    np.save(tmp_path / "x.npy", batch.numpy())
    subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "x.npy"), str(tmp_path / "y"),
                    *(f"{fmt}={path}" for fmt, path in models.items())], check=True, capture_output=True, timeout=300)
    return {fmt: np.load(tmp_path / f"y{i}.npy") for i, fmt in enumerate(models)}


def sidecar_input(sidecar: dict, image: Path) -> torch.Tensor:
    """The model input built from the sidecar's preprocessing alone (as a user of the file would)."""
    pre = sidecar["preprocessing"]
    img = v2.functional.pil_to_tensor(zoo_core.data.load_image(image))
    img = v2.functional.resize(img, pre["resize_size"], interpolation=InterpolationMode(pre["interpolation"]),
                               antialias=True)
    img = v2.functional.center_crop(img, pre["crop_size"]).float() * pre["pixel_scale"]
    mean, std = torch.tensor(pre["mean"]).view(3, 1, 1), torch.tensor(pre["std"]).view(3, 1, 1)
    return ((img - mean) / std)[None]


@pytest.mark.parametrize("backbone", ["resnet18", "timm/test_vit"])
def test_exports_reproduce_pytorch_and_load_in_a_fresh_process(runs: dict[str, Path], backbone: str,
                                                               tmp_path: Path) -> None:
    run_dir = runs[backbone]
    clf = zoo_core.load(run_dir)
    images = [write_image(tmp_path / f"new{i}.png", cls=i % 3, index=60 + i, size=50) for i in range(5)]
    fresh: dict[str, Path] = {}
    for fmt in ("torchscript", "onnx"):
        if fmt == "onnx" and not HAS_EXPORTER:
            with pytest.raises(zoo_core.ZooError, match=r"pip install 'backbone-zoo\[export\]'"):
                zoo_core.export(run_dir, format="onnx")
            continue
        out = tmp_path / f"model.{fmt}"
        res = zoo_core.export(run_dir, format=fmt, out=out)
        assert res.path == out and out.stat().st_size > 100_000 and res.sidecar == tmp_path / f"model.{fmt}.json"
        sidecar = json.loads(res.sidecar.read_text())
        assert sidecar["classes"] == clf.classes == ["class0", "class1", "class2"] and sidecar["backbone"] == backbone
        assert sidecar["input"]["shape"] == ["batch", 3, 32, 32] and sidecar["output"]["shape"] == ["batch", 3]
        assert sidecar["preprocessing"]["mean"] == list(clf.data_config.mean)
        assert sidecar["preprocessing"]["interpolation"] == clf.data_config.interpolation
        # the sidecar's recipe alone rebuilds the model's input
        batch = torch.cat([sidecar_input(sidecar, p) for p in images])
        assert torch.allclose(batch, clf.preprocess(images), atol=1e-5)

        parity = res.parity  # checked at export time on the run's validation images (3 classes × 6 → 3)
        assert parity.source == "validation images of the run" and parity.images == 3
        if fmt == "onnx" and not HAS_ORT:
            assert not parity.checked and "onnxruntime is not installed" in parity.line()
            continue
        assert parity.checked and parity.ok and parity.max_abs_diff < 1e-4 and parity.top1_agree == 3
        assert sidecar["parity"]["max_abs_diff"] == parity.max_abs_diff and "— ok" in res.summary()
        fresh[fmt] = out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic writes leave no temp files

    # a new process loads each file and runs it on a batch size the export never saw
    with torch.no_grad():
        expected = clf(batch).numpy()
    for fmt, got in fresh_process(fresh, batch, tmp_path).items():
        assert got.shape == (5, 3) and np.abs(got - expected).max() < 1e-4, fmt
    if "onnx" not in fresh:
        pytest.skip(NO_ORT if HAS_EXPORTER else "onnx/onnxscript are not installed: only the install hint was checked")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_cli_export_prints_the_check_and_takes_given_images(runs: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = runs["resnet18"]
    img = write_image(tmp_path / "mine.png", cls=1, index=70)
    code, out, _ = run(capsys, "export", run_dir, "--format", "torchscript", "--images", img, img)
    assert code == 0, out
    assert f"→ {run_dir / 'model.torchscript.pt'}" in out and "parity: max |Δlogit|" in out
    assert "on 2 given images" in out and out.rstrip().endswith("— ok")
    assert torch.jit.load(run_dir / "model.torchscript.pt")(torch.zeros(1, 3, 32, 32)).shape == (1, 3)

    code, out, _ = run(capsys, "export", run_dir, "--format", "torchscript", "--out", tmp_path / "m.pt", "--json")
    assert code == 0 and json.loads(out)["parity"]["checked"] and (tmp_path / "m.pt.json").is_file()

    code, _, err = run(capsys, "export", run_dir, "--format", "tflite")
    assert code == 2 and "invalid choice: 'tflite'" in err
    code, _, err = run(capsys, "export", tmp_path / "nowhere", "--format", "torchscript")
    assert code == 2 and "nowhere" in one_line_error(err)
    code, _, err = run(capsys, "export", run_dir, "--format", "torchscript", "--images", tmp_path / "gone.png")
    assert code == 2 and "gone.png: file not found" in one_line_error(err)


def test_without_the_data_the_check_runs_on_noise_and_says_so(runs: dict[str, Path], tmp_path: Path) -> None:
    moved = tmp_path / "run"
    moved.mkdir()
    for name in ("best.pt", "config.json", "val_predictions.csv"):
        shutil.copy(runs["resnet18"] / name, moved / name)
    config = json.loads((moved / "config.json").read_text())
    config["data_source"] = str(tmp_path / "deleted-data")
    (moved / "config.json").write_text(json.dumps(config))
    res = zoo_core.export(moved, format="torchscript")
    assert res.parity.checked and res.parity.ok and res.parity.source == "random noise images"
    assert "validation images are not available" in res.parity.note and "--images" in res.parity.note
    assert res.path == moved / "model.torchscript.pt"


class BatchBranch(nn.Module):
    """Takes a Python branch on the batch size: a trace bakes one branch in, torch.export refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.mean((2, 3)))
        return y if x.shape[0] == 2 else -y


class ValueBranch(BatchBranch):
    """Takes a Python branch on a tensor's value: torch.export cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.mean((2, 3)))
        return y if y.sum() > 0 else -y


def test_models_that_cannot_be_exported_fail_in_one_line_naming_the_backbone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clf = ZooClassifier(BatchBranch(), ["a", "b"], DataConfig(input_size=(3, 16, 16)), "toy/branchy").eval()
    monkeypatch.setattr(exporting, "load", lambda run: clf)
    ck = tmp_path / "best.pt"  # never read: load is replaced

    code, _, err = run(capsys, "export", ck, "--format", "torchscript")
    line = one_line_error(err)
    assert code == 2 and "toy/branchy: the torchscript export does not reproduce PyTorch" in line
    assert "FAILED" in line and "Try --format onnx" in line
    if HAS_EXPORTER and HAS_ORT:  # torch.export fixes the batch size at 2: onnxruntime refuses a batch of 8
        code, _, err = run(capsys, "export", ck, "--format", "onnx")
        line = one_line_error(err)
        assert code == 2 and "toy/branchy: the onnx export does not reproduce PyTorch" in line
        assert "the exported model fails on a batch of 8" in line and "Try --format torchscript" in line
    if HAS_EXPORTER:
        monkeypatch.setattr(exporting, "load", lambda run: ZooClassifier(ValueBranch(), clf.classes, clf.data_config,
                                                                         "toy/valuebranch").eval())
        code, _, err = run(capsys, "export", ck, "--format", "onnx")
        line = one_line_error(err)
        assert code == 2 and line.startswith("zoo: error: toy/valuebranch cannot be exported to onnx: ")
        assert "data-dependent" in line and "Try --format torchscript" in line
        assert "GraphModule" not in err  # the exporter's dump of the graph stays out of the log
    assert list(tmp_path.iterdir()) == []  # nothing written
    with pytest.raises(zoo_core.ZooError, match="unknown export format 'tflite'"):
        zoo_core.export(ck, format="tflite")
