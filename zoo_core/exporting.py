"""Export a trained run for serving: ONNX or TorchScript, with its preprocessing in a sidecar JSON.

``export(RUN_DIR, format="onnx")`` loads the run's model (:func:`zoo_core.load`: CPU, fp32, eval), exports
it with a dynamic batch dimension, checks that the exported model reproduces PyTorch's logits on a real
batch — the run's validation images (its ``config.json`` names the data, ``val_predictions.csv`` the
items), or the ``images`` given — and only then writes the model file and ``<file>.json`` beside it,
both atomically. A model that cannot be exported, or whose export disagrees with PyTorch, is a one-line
:class:`~zoo_core.ZooError` naming the backbone, and nothing is written.

- ``onnx``: torch's ``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``; needs the
  ``onnx`` and ``onnxscript`` packages), one self-contained ``.onnx`` file (models up to 2 GiB). The parity
  check runs the file in ``onnxruntime`` when it is installed (``pip install 'backbone-zoo[export]'``);
  without it the export still happens and the check is reported as skipped.
- ``torchscript``: ``torch.jit.trace`` (torch marks TorchScript deprecated in favour of ``torch.export``, but
  it is what ``torch.jit.load`` and LibTorch read); the check runs the traced module after a save/load
  round trip, so what it checks is what the file holds.

The exported model takes the normalised batch :meth:`zoo_core.inference.ZooClassifier.forward` takes
(``float32 [N, 3, H, W]``, RGB, ``(pixel / 255 - mean) / std`` after resize and center crop) and returns
logits in the order of ``classes``; the sidecar spells the preprocessing out.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image

from . import __version__
from . import data as zdata
from .errors import ZooError
from .inference import ZooClassifier, checkpoint_path, load
from .onnxgraph import MAX_BYTES, onnx_bytes, weight_bytes
from .records import read_run_config, read_table
from .training.options import check_values, integer, number
from .util import atomic_write_bytes, atomic_write_text, csv_value

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
"""Export formats and the file each writes into the run directory by default."""

PARITY_TOLERANCE = 1e-3
"""Largest ``max |exported - pytorch|`` logit difference accepted, relative to ``max(1, max |pytorch|)``."""

PARITY_IMAGES = 8  # validation images in the parity batch
_NOISE_SEED = 0


@dataclass
class Parity:
    """The check of an export against PyTorch: on what, how close, and why it was skipped if it was."""

    checked: bool
    images: int
    source: str  # what the batch is: the run's validation images, the given images or noise
    runtime: str | None = None  # what ran the exported model
    max_abs_diff: float | None = None
    tolerance: float | None = None  # absolute: PARITY_TOLERANCE × max(1, max |logit|)
    top1_agree: int | None = None  # images whose top-1 class matches PyTorch's
    note: str = ""

    @property
    def ok(self) -> bool:
        """True unless the check ran and the difference is over the tolerance."""
        return not self.checked or (self.max_abs_diff is not None and self.max_abs_diff <= (self.tolerance or 0))

    def line(self) -> str:
        """One line for the log."""
        if not self.checked:
            return f"parity: not checked — {self.note}"
        verdict = "ok" if self.ok else "FAILED"
        note = f"; {self.note}" if self.note else ""
        return (f"parity: max |Δlogit| {self.max_abs_diff:.2e} (tolerance {self.tolerance:.2e}) on {self.images} "
                f"{self.source}, top-1 agrees on {self.top1_agree}/{self.images}, via {self.runtime} — {verdict}{note}")


@dataclass
class ExportResult:
    """What :func:`export` wrote and how the exported model compared with PyTorch."""

    path: Path
    sidecar: Path
    format: str
    backbone: str
    parity: Parity

    def summary(self) -> str:
        """Two lines: what was written where, and the parity check."""
        return (f"zoo export: {self.backbone} → {self.path} ({self.format}; preprocessing and classes in "
                f"{self.sidecar})\n{self.parity.line()}")


def export(run: str | os.PathLike, format: str = "onnx", out: str | os.PathLike | None = None, *,
           images: Sequence[str | os.PathLike] | None = None, tolerance: float = PARITY_TOLERANCE,
           num_images: int = PARITY_IMAGES) -> ExportResult:
    """Export the model of run ``run`` (a run directory or its checkpoint) as ``format`` (``"onnx"`` or
    ``"torchscript"``) to ``out`` (default ``RUN_DIR/model.onnx`` / ``RUN_DIR/model.torchscript.pt``), with
    the sidecar ``<out>.json``; the parity check uses ``images`` when given, else up to ``num_images`` of
    the run's validation images (random noise images, with a note, when neither can be read)."""
    check_values({"--tolerance": (tolerance, number(0)), "--num-images": (num_images, integer(1))})
    if format not in FORMATS:
        raise ZooError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)} (--format)")
    clf = load(run)
    run_dir = checkpoint_path(run).parent
    path = Path(out) if out is not None else run_dir / FORMATS[format]
    if path.is_dir():
        raise ZooError(f"--out {str(path)!r} is a folder; give a file name (e.g. {path / FORMATS[format]})")
    batch, source, note = parity_batch(clf, run_dir, images, num_images)
    example = batch[:2] if len(batch) >= 2 else batch.repeat(2, 1, 1, 1)  # a batch of 1 would fix the batch size
    exported = (_onnx if format == "onnx" else _torchscript)(clf, example)
    parity = check_parity(clf.model, exported, batch, tolerance, source, note)
    if not parity.ok:
        raise ZooError(f"{clf.backbone}: the {format} export does not reproduce PyTorch ({parity.line()}); nothing "
                       f"was written. {_other_format_hint(format)}")
    atomic_write_bytes(path, exported.blob)
    sidecar = path.with_name(path.name + ".json")
    atomic_write_text(sidecar, json.dumps(describe(clf, format, path, parity, run_dir), indent=2) + "\n")
    return ExportResult(path=path, sidecar=sidecar, format=format, backbone=clf.backbone, parity=parity)


def describe(clf: ZooClassifier, format: str, path: Path, parity: Parity, run_dir: Path) -> dict[str, Any]:
    """The sidecar JSON: input, output, classes and the preprocessing an exported file expects."""
    dc = clf.data_config
    c, h, w = dc.input_size
    return {
        "format": format, "file": path.name, "backbone": clf.backbone, "classes": list(clf.classes),
        "input": {"name": "input", "shape": ["batch", c, h, w], "dtype": "float32", "layout": "NCHW",
                  "color": "RGB"},
        "output": {"name": "logits", "shape": ["batch", len(clf.classes)],
                   "meaning": "class logits in the order of 'classes'; softmax gives probabilities"},
        "preprocessing": {
            "steps": ["decode as 8-bit RGB", f"resize the shorter side to {dc.resize_size} px and the longer side "
                      f"to floor({dc.resize_size} * long / short) px ({dc.interpolation}, antialiased)",
                      f"center-crop to {h}x{w}, the top/left offset round((size - crop) / 2) with halves to even",
                      "scale pixel values to [0, 1] (divide by 255)",
                      "subtract mean and divide by std, per channel", "lay out as NCHW float32"],
            "resize_size": dc.resize_size, "resize_longer_side": "floor(resize_size * long / short)",
            "crop_offset": "round half to even of (size - crop) / 2", "interpolation": dc.interpolation,
            "crop_size": [h, w],
            "crop_pct": dc.crop_pct, "mean": list(dc.mean), "std": list(dc.std), "pixel_scale": 1 / 255,
        },
        "parity": asdict(parity), "run": os.fspath(run_dir.resolve()),
        "exported_with": {"backbone_zoo": __version__, "torch": torch.__version__},
    }


# ---- the batch the check runs on -------------------------------------------------------------------------
def parity_batch(clf: ZooClassifier, run_dir: Path, images: Sequence[str | os.PathLike] | None,
                 n: int) -> tuple[torch.Tensor, str, str]:
    """``(normalised batch, what it is, note)``: the given images, else up to ``n`` of the run's validation
    images, else ``n`` seeded noise images with a note saying why."""
    if images:
        return clf.preprocess([zdata.load_image(p) for p in images]), "given images", ""
    pil, why = validation_images(run_dir, n)
    if pil:
        return clf.preprocess(pil), "validation images of the run", ""
    g = torch.Generator().manual_seed(_NOISE_SEED)
    noise = torch.randint(0, 256, (max(n, 2), *clf.data_config.input_size), generator=g, dtype=torch.uint8)
    note = f"the run's validation images are not available ({why}); pass images (--images) to check on real ones"
    return zdata.normalize(noise, clf.data_config), "random noise images", note


def validation_images(run_dir: Path, n: int) -> tuple[list[Image.Image], str]:
    """Up to ``n`` validation images of the run, spread over ``val_predictions.csv``, re-read from the data the
    run's ``config.json`` names (an image folder or a built-in dataset); ``([], why)`` when there are none."""
    missing = [n for n in ("config.json", "val_predictions.csv") if not (run_dir / n).is_file()]
    if missing:
        return [], f"the run has no {' or '.join(missing)}"
    source = read_run_config(run_dir)  # a damaged file is a one-line error naming it and the field
    rows = read_table(run_dir / "val_predictions.csv", ("index", "item"))
    if not rows:
        return [], "the run has no validation images"
    k = min(n, len(rows))
    picks = sorted({round(j * (len(rows) - 1) / max(1, k - 1)) for j in range(k)})
    folder = Path(str(source.get("data_source", "")))
    if folder.is_dir():
        files = [folder / csv_value(rows[i]["item"]) for i in picks]
        pil = [img for img in map(_try_image, files) if img is not None]
        return pil, "" if pil else f"none of its validation files under {folder} can be read"
    name, train = source.get("data_source", ""), source.get("train", {})
    if not name or name.startswith("<"):
        return [], f"the run trained on a Dataset object ({name or 'unknown'})"
    try:
        split = zdata.load_data(name, data_root=train.get("data_root"), progress=False)
        return [split.val[int(rows[i]["index"])][0] for i in picks], ""
    except (ZooError, IndexError, KeyError, ValueError) as exc:
        return [], " ".join(str(exc).split())[:200]


def _try_image(path: Path) -> Image.Image | None:
    try:
        return zdata.load_image(path)
    except zdata.UnreadableImage:
        return None


# ---- the exporters -------------------------------------------------------------------------------------
@dataclass
class Exported:
    """An exported model in memory: the file's bytes and what runs them (``run`` None: ``runtime`` says why)."""

    blob: bytes
    run: Callable[[torch.Tensor], torch.Tensor] | None
    runtime: str


def _onnx(clf: ZooClassifier, example: torch.Tensor) -> Exported:
    """The ONNX file (torch.export-based exporter, dynamic batch) and an onnxruntime session over it."""
    size = weight_bytes(clf.model)
    if size > MAX_BYTES:
        raise ZooError(f"{clf.backbone}: {size / 2**30:.1f} GiB of weights do not fit one ONNX file (2 GiB); "
                       "use --format torchscript")
    try:
        blob = onnx_bytes(clf.model, example, input_name="input", output_name="logits")
    except ZooError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds; all mean "cannot export"
        raise _cannot_export(clf.backbone, "onnx", exc) from exc
    try:
        import onnxruntime as ort
    except ImportError:
        return Exported(blob, None, "onnxruntime is not installed (pip install 'backbone-zoo[export]'), so the "
                                    "file was not run")
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    return Exported(blob, lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0]),
                    f"onnxruntime {ort.__version__}")


def _torchscript(clf: ZooClassifier, example: torch.Tensor) -> Exported:
    """The TorchScript file (``torch.jit.trace``) and the module loaded back from it."""
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():  # deprecation and tracer warnings: the parity check is the judge
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(clf.model, example, check_trace=False), buf)
            loaded = torch.jit.load(io.BytesIO(buf.getvalue()), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - tracing fails in many ways
        raise _cannot_export(clf.backbone, "torchscript", exc) from exc
    return Exported(buf.getvalue(), loaded, f"torch.jit {torch.__version__.split('+')[0]} (saved and loaded back)")


def _cannot_export(backbone: str, format: str, exc: BaseException) -> ZooError:
    """The one-line error of a failed export: the innermost reason, first line only."""
    cause = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    return ZooError(f"{backbone} cannot be exported to {format}: {_first_line(cause)}. {_other_format_hint(format)}")


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0][:240] if lines else 'no message'}"


def _other_format_hint(format: str) -> str:
    other = "torchscript" if format == "onnx" else "onnx"
    return (f"Try --format {other}, or make the model's forward traceable (no Python branches on tensor "
            "values, tensors in and out)")


# ---- the check -----------------------------------------------------------------------------------------
@torch.no_grad()
def check_parity(model: torch.nn.Module, exported: Exported, batch: torch.Tensor, tolerance: float,
                 source: str, note: str = "") -> Parity:
    """Compare the exported model with ``model`` on ``batch`` and on its first image alone (a batch size the
    export did not see)."""
    if exported.run is None:
        return Parity(checked=False, images=len(batch), source=source, note=exported.runtime)
    model.eval()
    diff, scale, agree = 0.0, 1.0, None
    for x in (batch, batch[:1]):
        ref = model(x).float()
        try:
            got = exported.run(x).float()
        except Exception as exc:  # noqa: BLE001 - e.g. a batch size the export fixed
            why = _first_line(exc)
            return Parity(True, len(batch), source, exported.runtime, float("inf"), tolerance, 0,
                          f"the exported model fails on a batch of {len(x)}: {why}")
        if got.shape != ref.shape:
            return Parity(True, len(batch), source, exported.runtime, float("inf"), tolerance, 0,
                          f"output shape {tuple(got.shape)} instead of {tuple(ref.shape)}")
        d = float((got - ref).abs().max())
        diff = max(diff, d if d == d else float("inf"))  # NaN fails
        scale = max(scale, float(ref.abs().max()))
        if agree is None:  # of the whole batch
            agree = int((got.argmax(1) == ref.argmax(1)).sum())
    return Parity(checked=True, images=len(batch), source=source, runtime=exported.runtime, max_abs_diff=diff,
                  tolerance=tolerance * scale, top1_agree=agree, note=note)
