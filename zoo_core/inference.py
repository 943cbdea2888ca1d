"""Reuse a trained run: ``load(RUN_DIR)`` gives the model back, ``predict`` labels images and folders of
images, ``write_predictions`` saves its results as CSV."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from . import data as zdata
from . import logs
from .backbones import registry
from .backbones import weights as wts
from .backbones.adapter import DataConfig
from .backbones.models import create
from .errors import DataError, ZooError
from .rundir import load_checkpoint
from .training.options import check_values, integer
from .util import atomic_write_text, csv_text

PROGRESS_MIN = 64  # predict() shows a progress bar from this many images


class ZooClassifier(nn.Module):
    """A trained backbone with its class names and preprocessing, in eval mode.

    ``forward`` takes normalised float batches like the underlying model; :meth:`predict` takes image
    files, PIL images or image tensors (``uint8`` 0–255 or float 0–1, see :mod:`zoo_core.data.inputs`) and
    does the preprocessing itself.
    """

    def __init__(self, model: nn.Module, classes: list[str], data_config: DataConfig, backbone: str) -> None:
        super().__init__()
        self.model = model
        self.classes = classes
        self.data_config = data_config
        self.backbone = backbone
        self.transform = zdata.Preprocess(data_config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a normalised batch."""
        return self.model(x)

    def preprocess(self, images: Any) -> torch.Tensor:
        """Decode (:func:`zoo_core.data.load_image`), resize, crop and normalise images into one batch."""
        return self.transform.batch(images, next(self.model.parameters()).device)

    @torch.no_grad()
    def predict(self, images: Any, topk: int = 5, batch_size: int = 32) -> list[dict[str, Any]]:
        """One row per image, in order, as :func:`predict` gives: ``{"image", "top"}``, ``"top"`` the ``k`` most
        probable ``{"label", "probability"}``, ``"image"`` the path given (or the image's position for a PIL
        image or tensor). ``images``: one image or a list (paths, PIL images, tensors) or a ``[B, 3, H, W]``
        batch. An unreadable file raises :class:`zoo_core.data.UnreadableImage`; :func:`predict` reports it
        per file instead."""
        self.eval()
        items = zdata.image_list(images)
        out: list[dict[str, Any]] = []
        k = min(topk, len(self.classes))
        for i in range(0, len(items), batch_size):
            probs = self.model(self.preprocess(items[i:i + batch_size])).float().softmax(1)
            p, idx = probs.topk(k, dim=1)
            out += [{"image": _label_of(items[i + n], i + n),
                     "top": [{"label": self.classes[j], "probability": round(float(q), 6)}
                             for q, j in zip(pr.tolist(), ix.tolist())]} for n, (pr, ix) in enumerate(zip(p, idx))]
        return out


def _label_of(item: Any, position: int) -> str | int:
    """What a prediction row names its image by: the path given, else the image's position."""
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else position


def checkpoint_path(run: str | os.PathLike) -> Path:
    """The checkpoint of ``run``: the file itself, or a run directory's ``best.pt`` (else its ``last.pt``)."""
    path = Path(run)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise ZooError(f"{str(path)!r} holds no best.pt or last.pt: not a finished zoo run directory")
    return path


def _inconsistent(path: Path, what: str) -> ZooError:
    return ZooError(f"checkpoint {str(path)!r} {what}; it was not written by zoo train or has been changed "
                    "since: use the run's own best.pt, or train again")


def _data_config(path: Path, raw: Any) -> DataConfig:
    """The checkpoint's data config, checked field by field."""
    try:
        if not isinstance(raw, Mapping):
            raise TypeError(f"it is a {type(raw).__name__}, not a dict")
        dc = DataConfig.from_dict(dict(raw))
        channels = len(dc.input_size)
        if channels != 3 or not all(isinstance(v, int) and v > 0 for v in dc.input_size):
            raise ValueError(f"input_size {list(dc.input_size)} is not [channels, height, width]")
        if not (len(dc.mean) == len(dc.std) == dc.input_size[0]) or not all(float(s) > 0 for s in dc.std):
            raise ValueError(f"mean {list(dc.mean)} / std {list(dc.std)} do not fit {dc.input_size[0]} channels")
        if not 0 < float(dc.crop_pct) <= 1:
            raise ValueError(f"crop_pct {dc.crop_pct!r} is not in (0, 1]")
        zdata.eval_transform(dc)  # an unknown interpolation fails here
    except (TypeError, ValueError, ZooError) as exc:
        raise _inconsistent(path, f"has a bad data_config ({' '.join(str(exc).split())})") from exc
    return dc


def _check_contents(path: Path, ck: Any) -> tuple[str, list[str], Mapping[str, torch.Tensor]]:
    """``(backbone, classes, model state)`` of a checkpoint, or a one-line ZooError naming what is wrong."""
    if not isinstance(ck, Mapping):
        raise _inconsistent(path, f"holds a {type(ck).__name__}, not a dict")
    for key in ("model", "classes", "backbone", "data_config"):
        if key not in ck:
            raise _inconsistent(path, f"lacks {key!r}")
    backbone, classes, state = ck["backbone"], ck["classes"], ck["model"]
    if not isinstance(backbone, str) or not backbone:
        raise _inconsistent(path, f"names backbone {backbone!r}, not a backbone name")
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        raise _inconsistent(path, f"has classes {str(classes)[:80]!r}, not a non-empty list of names")
    if len(set(classes)) != len(classes):
        raise _inconsistent(path, "lists a class name twice")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _inconsistent(path, f"has a 'model' of type {type(state).__name__}, not a state dict of tensors")
    if ck.get("part"):
        raise ZooError(f"checkpoint {str(path)!r} holds only the head {ck['part']!r} (a feature-extraction "
                       "run's last.pt, for --resume): load the run's best.pt, or finish the run with --resume")
    return backbone, list(classes), state


def load(run: str | os.PathLike, device: str | torch.device = "cpu") -> ZooClassifier:
    """The trained model of run directory (or checkpoint file) ``run``, ready for inference.

    Every inconsistency in the checkpoint (class list versus head size, a ``model`` that is not a state
    dict, a bad data config, an unknown backbone) is a one-line :class:`zoo_core.ZooError` naming the file.
    """
    path = checkpoint_path(run)
    ck: Any = load_checkpoint(path)
    backbone, classes, state = _check_contents(path, ck)
    data_config = _data_config(path, ck["data_config"])
    try:
        adapter, _ = registry.get_adapter(backbone)
    except ZooError as exc:
        raise ZooError(f"checkpoint {str(path)!r} was trained with backbone {backbone!r}: {exc}") from exc
    model = create(backbone, num_classes=len(classes), weights=None)
    head = adapter.head_name(model)
    head_weight = state.get(f"{head}.weight")
    if head_weight is not None and head_weight.shape[0] != len(classes):
        raise _inconsistent(path, f"lists {len(classes)} classes but its head {head!r} has {head_weight.shape[0]} "
                                  "outputs")
    try:
        wts.load_into(model, state, head=None, source=str(path))
    except ZooError as exc:
        raise _inconsistent(path, f"does not fit {backbone} ({exc})") from exc
    clf = ZooClassifier(model, classes, data_config, backbone)
    return clf.to(device).eval()


def expand_images(paths: Sequence[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """``(path, error)`` per image to label: a file as given (``error`` None; whether it reads is found out
    later; a pipe, socket or device gets an error unopened), a folder as its regular image files (extensions
    of :data:`zoo_core.data.IMAGE_EXTENSIONS`, recursive, sorted, hidden files and folders left out), a folder
    without any as one entry with an error."""
    out: list[tuple[str, str | None]] = []
    for p in paths:
        if not os.path.isdir(p):  # a FIFO, socket or device would block or never end: refused unopened
            odd = os.path.exists(p) and not os.path.isfile(p)
            out.append((os.fspath(p), "not a regular file (a pipe, socket or device)" if odd else None))
            continue
        found = []
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")
                      and os.path.splitext(f)[1].lower() in zdata.IMAGE_EXTENSIONS
                      and os.path.isfile(os.path.join(root, f))]  # regular files only (never a FIFO)
        out += [(f, None) for f in found] or [
            (os.fspath(p), f"folder holds no image files ({' '.join(zdata.IMAGE_EXTENSIONS)})")]
    return out


def predict(run: str | os.PathLike, images: Any, topk: int = 5, batch_size: int = 32,
            progress: bool = False) -> list[dict[str, Any]]:
    """Label images with the model of run ``run``: one row per image, in order, ``{"image", "top"}`` with the
    ``k`` most probable ``{"label", "probability"}`` (the shape :meth:`ZooClassifier.predict` gives).

    ``images``: image files, folders (their images, :func:`expand_images`), PIL images or tensors (``uint8``
    0–255 or float 0–1; ``"image"`` is then the position), one or a list. A file that cannot be read (or a
    folder without images) gets an empty ``"top"`` and an ``"error"`` line; the other images are still
    labelled. ``progress`` shows a bar from :data:`PROGRESS_MIN` images on."""
    check_values({"--topk": (topk, integer(1)), "--batch-size": (batch_size, integer(1))})
    clf = load(run)
    given = zdata.image_list(images)
    entries: list[tuple[Any, str | None]] = []
    for n, item in enumerate(given):
        entries += expand_images([item]) if isinstance(item, (str, os.PathLike)) else [(n, None)]
    results: list[dict[str, Any]] = [{"image": img, "top": []} for img, _ in entries]
    pending: list[tuple[dict[str, Any], Any]] = []
    bar = tqdm(total=len(entries), unit="img", desc="zoo predict", leave=False, file=sys.stderr,
               disable=not logs.progress(progress) or len(entries) < PROGRESS_MIN)

    def flush() -> None:
        for (row, _), pred in zip(pending, clf.predict([img for _, img in pending], topk=topk,
                                                       batch_size=batch_size)):
            row["top"] = pred["top"]
        bar.update(len(pending))
        pending.clear()

    with bar:
        for row, (img, problem) in zip(results, entries):
            try:
                if problem:
                    row["error"] = f"cannot read {img}: {problem}"
                    bar.update(1)
                else:
                    pending.append((row, zdata.as_image(given[img]) if isinstance(img, int) else zdata.load_image(img)))
            except zdata.UnreadableImage as exc:
                row["error"] = f"cannot read image {exc.path}: {exc.reason}"
                bar.update(1)
            except DataError as exc:
                row["error"] = str(exc)
                bar.update(1)
            if len(pending) == batch_size:
                flush()
        flush()
    return results


def write_predictions(results: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write :func:`predict`'s results as CSV (atomically): ``image``, ``label_1``, ``probability_1``, … up to
    the longest top-k, and ``error`` (empty for labelled images)."""
    k = max((len(r["top"]) for r in results), default=0)
    columns = ["image"] + [f"{c}_{i}" for i in range(1, k + 1) for c in ("label", "probability")] + ["error"]
    rows = []
    for r in results:
        row: dict[str, Any] = {"image": r["image"], "error": " ".join(r.get("error", "").split())}
        for i, t in enumerate(r["top"], 1):
            row[f"label_{i}"], row[f"probability_{i}"] = t["label"], t["probability"]
        rows.append(row)
    atomic_write_text(Path(path), csv_text(rows, columns))
