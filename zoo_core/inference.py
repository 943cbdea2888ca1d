"""Reuse a trained run: ``load(RUN_DIR)`` gives the model back, ``predict`` labels images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torch import nn

from . import data as zdata
from .adapter import DataConfig
from .errors import DataError, ZooError
from .models import create
from .rundir import load_checkpoint


class ZooClassifier(nn.Module):
    """A trained backbone with its class names and preprocessing, in eval mode.

    ``forward`` takes normalised float batches like the underlying model; :meth:`predict` takes image
    files or PIL images and does the preprocessing itself.
    """

    def __init__(self, model: nn.Module, classes: list[str], data_config: DataConfig, backbone: str) -> None:
        super().__init__()
        self.model = model
        self.classes = classes
        self.data_config = data_config
        self.backbone = backbone
        self._transform = zdata.eval_transform(data_config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a normalised batch."""
        return self.model(x)

    def preprocess(self, images: Sequence[str | os.PathLike | Image.Image]) -> torch.Tensor:
        """Decode, resize, crop and normalise images into one batch."""
        tensors = []
        for img in images:
            if not isinstance(img, Image.Image):
                path = Path(img)
                try:
                    with Image.open(path) as opened:
                        img = zdata.to_rgb(opened)
                except (OSError, ValueError) as exc:
                    raise DataError(f"cannot read image {str(path)!r}: {exc}") from exc
            else:
                img = zdata.to_rgb(img)
            tensors.append(self._transform(img))
        device = next(self.model.parameters()).device
        return zdata.normalize(torch.stack(tensors).to(device), self.data_config)

    @torch.no_grad()
    def predict(self, images: Sequence[str | os.PathLike | Image.Image], topk: int = 5,
                batch_size: int = 32) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(label, probability)`` pairs for each image."""
        self.eval()
        out: list[list[tuple[str, float]]] = []
        k = min(topk, len(self.classes))
        for i in range(0, len(images), batch_size):
            probs = self.model(self.preprocess(images[i:i + batch_size])).float().softmax(1)
            p, idx = probs.topk(k, dim=1)
            out += [[(self.classes[j], float(q)) for q, j in zip(pr.tolist(), ix.tolist())]
                    for pr, ix in zip(p, idx)]
        return out


def _checkpoint_path(run: str | os.PathLike) -> Path:
    path = Path(run)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise ZooError(f"{str(path)!r} holds no best.pt or last.pt: not a finished zoo run directory")
    return path


def load(run: str | os.PathLike, device: str | torch.device = "cpu") -> ZooClassifier:
    """The trained model of run directory (or checkpoint file) ``run``, ready for inference."""
    ck: dict[str, Any] = load_checkpoint(_checkpoint_path(run))
    for key in ("model", "classes", "backbone", "data_config"):
        if key not in ck:
            raise ZooError(f"checkpoint of {str(run)!r} lacks {key!r}: not written by zoo train")
    model = create(ck["backbone"], num_classes=len(ck["classes"]), weights=None)
    model.load_state_dict(ck["model"])
    clf = ZooClassifier(model, list(ck["classes"]), DataConfig.from_dict(ck["data_config"]), ck["backbone"])
    return clf.to(device).eval()


def predict(run: str | os.PathLike, images: Sequence[str | os.PathLike], topk: int = 5) -> list[dict[str, Any]]:
    """Label image files with the model of run ``run``: one dict per image with its top-k."""
    clf = load(run)
    return [{"image": str(img), "top": [{"label": lbl, "probability": round(p, 6)} for lbl, p in preds]}
            for img, preds in zip(images, clf.predict(images, topk=topk))]
