"""The run directory: resolved config, per-epoch metrics, checkpoints, plots — all written atomically.

Layout of ``RUN_DIR``::

    config.json        the resolved TrainConfig plus data/backbone facts (classes, data config, …)
    metrics.jsonl      one JSON object per epoch (also metrics.csv with the same columns)
    last.pt            full training state for --resume (model, optimizer, epoch, history, RNG)
    best.pt            best weights by validation loss, with everything needed for inference
    summary.json       final metrics, best epoch, paths, per-class accuracy
    per_class.csv      per-class accuracy table
    val_predictions.csv  per validation image: item, true and predicted class, their probabilities, loss
    most_confused.csv  the (true, predicted) class pairs of the mistakes, most frequent first
    curves.png         learning curves; confusion.png: confusion matrix on the validation set
    top_losses.png     the validation images with the highest loss, with true / predicted / probability
    tensorboard/       TensorBoard event files (only with ``log="tensorboard"``)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .backbones.weights import load_refusal
from .errors import ZooError
from .util import atomic_write, atomic_write_text, csv_text, remove_stale_temps


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` a dict of tensors and plain values atomically (loadable with weights_only).

    Streams straight into the temporary file, so a large model is never held twice in memory."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True`` (``mmap``: tensors
    memory-mapped, read only when used)."""
    if not path.is_file():
        raise ZooError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001
        raise ZooError(f"cannot read checkpoint {str(path)!r}: {load_refusal(exc)}") from exc


class RunDir:
    """Writes one run's files; every write replaces the whole file atomically.

    Opening an existing run directory (a resume, or a run started again under the same name) removes the
    temporary files a killed write left there (:func:`zoo_core.util.remove_stale_temps`)."""

    def __init__(self, path: str | os.PathLike, *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled  # False on non-zero ranks under torch.distributed
        self.removed: list[Path] = []  # stale temporary files removed on opening
        if enabled:
            self.path.mkdir(parents=True, exist_ok=True)
            self.removed = remove_stale_temps(self.path)

    def file(self, name: str) -> Path:
        """Path of ``name`` inside the run directory."""
        return self.path / name

    def write_json(self, name: str, obj: Any) -> None:
        """Write ``obj`` as pretty JSON."""
        if self.enabled:
            atomic_write_text(self.file(name), json.dumps(obj, indent=2, default=str) + "\n")

    def read_json(self, name: str) -> Any:
        """Read a JSON file of the run."""
        return json.loads(self.file(name).read_text())

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl and metrics.csv from the whole history (so resume never duplicates)."""
        if not self.enabled:
            return
        atomic_write_text(self.file("metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in history))
        columns: list[str] = []
        for row in history:
            columns += [k for k in row if k not in columns]
        atomic_write_text(self.file("metrics.csv"), csv_text(history, columns))

    def write_table(self, name: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
        """Write ``rows`` as CSV (no rows: no file, or only the header when ``columns`` are given)."""
        if not self.enabled or not (rows or columns):
            return
        atomic_write_text(self.file(name), csv_text(rows, columns or list(rows[0])))

    def save(self, name: str, state: dict[str, Any]) -> None:
        """Save a checkpoint atomically."""
        if self.enabled:
            save_checkpoint(self.file(name), state)
