"""What a run tells and leaves behind: its log lines and progress bars, and at the end the per-class table,
the per-image validation predictions, the confusion matrix, ``summary.json``, the plots and the
:class:`~zoo_core.training.config.TrainResult`.

Seams: the plots are drawn through the module (``plots.learning_curves``, ``plots.confusion_matrix``),
so a test may replace them to skip matplotlib.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import data as zdata
from .. import plots
from ..freezing import count_parameters
from .config import TrainResult, flag
from .setup import RunState, Trained

_METRICS = ("val_loss", "val_acc", "val_top5", "train_loss", "train_acc")  # of the best epoch, in the result


# ---- log lines ----------------------------------------------------------------------------------------
def start(state: RunState) -> None:
    """The first lines of a run: what trains on what, where, and which files were skipped."""
    cfg, split = state.cfg, state.split
    state.say(f"zoo train: {cfg.backbone} [{state.strategy.name}] on {split.summary()} | device {state.device}, "
              f"{state.precision}{', random init (no pretrained weights)' if cfg.weights is None else ''}")
    if split.problems:
        state.say(f"zoo train: skipped {len(split.problems)} unusable file(s), e.g. {split.problems[0][0]}: "
                  f"{split.problems[0][1]} (all listed in config.json)")


def epoch_bar(state: RunState, total: int, epoch: int) -> Any:
    """The progress bar of one epoch (off when the run is quiet)."""
    return tqdm(total=total, desc=f"epoch {epoch + 1}/{state.epochs}", disable=state.quiet, leave=False,
                file=sys.stderr)


def epoch_line(state: RunState, epoch: int, train: dict[str, Any], val: dict[str, Any]) -> None:
    """The log line of a finished epoch."""
    top5 = f" top-5 {val['val_top5']:.3f}" if "val_top5" in val else ""
    state.say(f"epoch {epoch + 1}/{state.epochs}: train loss {train['train_loss']:.4f} acc "
              f"{train['train_acc']:.3f} | val loss {val['val_loss']:.4f} acc {val['val_acc']:.3f}{top5} | "
              f"{train['images_per_s']:.0f} img/s, {train['epoch_seconds']:.1f}s")


def phase_line(state: RunState, epoch: int, k: int, groups: int) -> None:
    """What trains from ``epoch`` on: parameter counts, backbone stages and optimizer groups."""
    total, trainable = count_parameters(state.model)
    state.say(f"zoo train: epoch {epoch + 1}: {trainable:,} of {total:,} parameters train "
              f"({k}/{len(state.stages)} backbone stages + head) in {groups} optimizer groups")


def features_line(state: RunState, shape: tuple[int, ...], from_cache: bool, trainable: int) -> None:
    """The cached-feature path's line: the feature matrix, where it came from, what trains."""
    state.say(f"zoo train: features {shape} ({'from cache' if from_cache else 'extracted'}); "
              f"{trainable:,} of {count_parameters(state.model)[0]:,} parameters train (the head)")


def head_fit_line(state: RunState, fit: Any) -> None:
    """The converged head fit's line (a :class:`zoo_core.headfit.HeadFit`)."""
    state.say(f"zoo train: converged head fit (L-BFGS, l2={fit.l2:g}, {fit.iterations} iterations, "
              f"{fit.seconds:.1f}s)")


def val_line(state: RunState, row: dict[str, Any]) -> None:
    """The validation result of the converged head fit."""
    state.say(f"zoo train: val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}")


def resuming(state: RunState, epoch: int) -> None:
    """A resumed run's line."""
    changed = state.resumes[-1]["changed"] if state.resumes else {}
    what = ", ".join(f"{flag(k)} {old} → {new}" for k, (old, new) in changed.items() if k != "progress")
    state.say(f"zoo train: resuming {state.run.path} at epoch {epoch + 1}/{state.epochs}"
              + (f" (changed: {what})" if what else ""))


def early_stop(state: RunState, stale: int, best_epoch: int, *, before: bool = False) -> None:
    """The line of a run that stops (``before``: a resumed run that had already stopped)."""
    if before:
        state.say(f"zoo train: {state.run.path} already stopped early (no val-loss improvement for {stale} epochs)")
    else:
        state.say(f"zoo train: early stop — no val-loss improvement for {stale} epochs (best epoch {best_epoch})")


# ---- the end of a run -------------------------------------------------------------------------------------
@dataclass
class ValPredictions:
    """The final model's output on every validation image, in the item order of ``split.val``."""

    probs: torch.Tensor  # [N, K] float32 softmax probabilities
    targets: torch.Tensor  # [N] int64 true classes

    @property
    def preds(self) -> torch.Tensor:
        """[N] predicted classes (argmax)."""
        return self.probs.argmax(1) if len(self.probs) else torch.empty(0, dtype=torch.long)

    def rows(self, dataset: Any, classes: list[str]) -> list[dict[str, Any]]:
        """One row per image for ``val_predictions.csv``: which image, true and predicted class, the
        probabilities of both and the image's cross-entropy loss."""
        idx = torch.arange(len(self.targets))
        p_true = self.probs[idx, self.targets].clamp_min(1e-12) if len(idx) else self.probs.new_empty(0)
        p_pred = self.probs.max(1).values if len(idx) else self.probs.new_empty(0)
        return [{"index": i, "item": zdata.item_name(dataset, i), "target": classes[t], "pred": classes[p],
                 "correct": int(t == p), "p_pred": round(float(pp), 6), "p_target": round(float(pt), 6),
                 "loss": round(float(-torch.log(pt)), 6)}
                for i, (t, p, pp, pt) in enumerate(zip(self.targets.tolist(), self.preds.tolist(), p_pred, p_true))]


def confusion(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Confusion matrix counts, rows = true class."""
    idx = targets * num_classes + preds
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes).tolist()


def per_class_table(matrix: list[list[int]], classes: list[str]) -> list[dict[str, Any]]:
    """Per-class support, correct and accuracy from a confusion matrix."""
    rows = []
    for i, name in enumerate(classes):
        support = sum(matrix[i])
        rows.append({"class": name, "support": support, "correct": matrix[i][i],
                     "accuracy": round(matrix[i][i] / support, 4) if support else None})
    return rows


def finish(state: RunState, trained: Trained, val: ValPredictions, train_seconds: float) -> TrainResult:
    """The result of the run; rank 0 writes per_class.csv, val_predictions.csv, summary.json and the plots."""
    cfg, run, classes = state.cfg, state.run, state.split.classes
    history, best = trained.history, trained.best
    matrix = confusion(val.preds, val.targets, len(classes))
    table = per_class_table(matrix, classes)
    best_row = next((r for r in history if r["epoch"] == best["epoch"]), history[-1] if history else {})
    metrics = {k: best_row.get(k) for k in _METRICS if best_row.get(k) is not None}
    total, trainable = count_parameters(state.model)
    trainable = max((r.get("trainable_params", 0) for r in history), default=trainable)
    result = TrainResult(run_dir=run.path, backbone=cfg.backbone, strategy=cfg.strategy, classes=list(classes),
                         history=history, best_epoch=best["epoch"], metrics=metrics, total_params=total,
                         trainable_params=trainable, train_seconds=train_seconds, config=trained.record)
    if state.ctx.is_main:
        run.write_table("per_class.csv", table)
        run.write_table("val_predictions.csv", val.rows(state.split.val, classes))
        run.write_json("summary.json", {
            "backbone": cfg.backbone, "strategy": cfg.strategy, "best_epoch": best["epoch"], "metrics": metrics,
            "epochs_run": len(history), "total_params": total, "trainable_params": trainable,
            "train_seconds": round(train_seconds, 3), "per_class": table, "confusion_matrix": matrix,
            "classes": classes, "random_init": cfg.weights is None})
        title = f"{cfg.backbone} [{cfg.strategy}]"
        plots.learning_curves(history, run.file("curves.png"), title)
        plots.confusion_matrix(matrix, classes, run.file("confusion.png"), f"{title} — validation")
        print(f"zoo train: done. {result.summary()}", file=sys.stderr, flush=True)
    return result
