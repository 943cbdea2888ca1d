"""What a run tells and leaves behind: its log lines and progress bars, and at the end the per-class table,
the per-image validation predictions and the most confused class pairs, the confusion matrix,
``summary.json``, the plots (learning curves, confusion matrix, the top-losses gallery), the end of the
TensorBoard log and the :class:`~zoo_core.training.config.TrainResult`.

Seams: the plots are drawn through the module (``plots.learning_curves``, ``plots.confusion_matrix``,
``plots.top_losses``), so a test may replace them to skip matplotlib.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .. import data as zdata
from ..backbones.freezing import count_parameters
from ..data import augment as zaug
from ..outputs import plots
from .config import TrainResult, flag
from .setup import RunState, Trained

_METRICS = ("val_loss", "val_acc", "val_top5", "train_loss", "train_acc")  # of the best epoch, in the result
TOP_LOSSES = 9  # validation images in top_losses.png


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


def probe_lines(state: RunState, probe: dict[str, Any], augment: tuple[str, ...]) -> None:
    """LP-FT: the linear probe the run starts from (or only checks augmentations with) and what the check kept."""
    row = probe["row"]
    start = "fine-tuning starts from it" if state.shape.from_probe else "the head starts random (--head-init random)"
    state.say(f"zoo train: linear probe on {'cached' if probe['features_from_cache'] else 'extracted'} features: "
              f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} (epoch 0; {start})")
    check = probe.get("augment_check")
    if check:
        views = "; ".join(f"{name}: {c['probe_view']} {100 * c['probe_top1']:.1f}% → {c['checked_view']} "
                          f"{100 * c['view_top1']:.1f}% ({c['why']}) → {'kept' if c['kept'] else 'dropped'}"
                          for name, c in check.items())
        state.say(f"zoo train: augmentation check on {next(iter(check.values()))['images']} validation images "
                  f"(probe top-1): {views}. Training with {zaug.describe(augment)}")


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


def most_confused(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The mistakes of ``val_predictions.csv`` rows as (true, predicted) class pairs with their count and their
    share of the true class's images, most frequent first (fastai's ``most_confused``)."""
    support: dict[str, int] = {}
    pairs: dict[tuple[str, str], int] = {}
    for r in rows:
        support[r["target"]] = support.get(r["target"], 0) + 1
        if r["target"] != r["pred"]:
            pairs[r["target"], r["pred"]] = pairs.get((r["target"], r["pred"]), 0) + 1
    return [{"true": t, "pred": p, "count": n, "share_of_true": round(n / support[t], 4)}
            for (t, p), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))]


def worst_images(dataset: Any, rows: list[dict[str, Any]], k: int = TOP_LOSSES) -> list[dict[str, Any]]:
    """The ``k`` rows with the highest loss, worst first, each with a ``load()`` that reads its image again
    from ``dataset`` (PIL; None when it cannot be read any more). Only the gallery calls it, so only these
    ``k`` images are ever decoded, and none when the plot is skipped."""

    def loader(index: int) -> Callable[[], Any]:
        def load() -> Any:
            try:
                return dataset[index][0]
            except Exception:  # noqa: BLE001 - a file deleted since, a Dataset that fails: the tile says so
                return None
        return load

    return [{**r, "load": loader(r["index"])} for r in sorted(rows, key=lambda r: (-r["loss"], r["index"]))[:k]]


def probe_start(record: dict[str, Any]) -> list[dict[str, Any]]:
    """``[the probe's metrics row]`` of an LP-FT run's ``config.json`` record (its epoch 0), else ``[]``."""
    probe = record.get("probe")
    row = probe.get("row") if isinstance(probe, dict) else None
    return [row] if isinstance(row, dict) else []


def finish(state: RunState, trained: Trained, val: ValPredictions, train_seconds: float) -> TrainResult:
    """The result of the run; rank 0 writes its files (:func:`write_outputs`)."""
    cfg, run, classes = state.cfg, state.run, state.split.classes
    history, best = trained.history, trained.best
    best_row = next((r for r in probe_start(trained.record) + history if r.get("epoch") == best["epoch"]),
                    history[-1] if history else {})
    metrics = {k: best_row.get(k) for k in _METRICS if best_row.get(k) is not None}
    total, trainable = count_parameters(state.model)
    trainable = max((r.get("trainable_params", 0) for r in history), default=trainable)
    result = TrainResult(run_dir=run.path, backbone=cfg.backbone, strategy=cfg.strategy, classes=list(classes),
                         history=history, best_epoch=best["epoch"], metrics=metrics, total_params=total,
                         trainable_params=trainable, train_seconds=train_seconds, config=trained.record)
    if state.ctx.is_main:
        write_outputs(state, result, val)
        state.say(f"zoo train: done. {result.summary()}")
    return result


def write_outputs(state: RunState, result: TrainResult, val: ValPredictions) -> None:
    """per_class.csv, val_predictions.csv, most_confused.csv, summary.json, the plots (curves, confusion
    matrix, top losses) and the end of the TensorBoard log."""
    cfg, run, classes, history = state.cfg, state.run, result.classes, result.history
    matrix = confusion(val.preds, val.targets, len(classes))
    table = per_class_table(matrix, classes)
    rows = val.rows(state.split.val, classes)
    run.write_table("per_class.csv", table)
    run.write_table("val_predictions.csv", rows)
    run.write_table("most_confused.csv", most_confused(rows), columns=["true", "pred", "count", "share_of_true"])
    run.write_json("summary.json", {
        "backbone": cfg.backbone, "strategy": cfg.strategy, "best_epoch": result.best_epoch,
        "metrics": result.metrics, "epochs_run": len(history), "total_params": result.total_params,
        "trainable_params": result.trainable_params, "train_seconds": round(result.train_seconds, 3),
        "per_class": table, "confusion_matrix": matrix, "classes": classes, "random_init": cfg.weights is None,
        "tensorboard": None if state.log.dir is None else str(state.log.dir)})
    title = f"{cfg.backbone} [{cfg.strategy}]"
    plots.learning_curves(probe_start(result.config) + list(history), run.file("curves.png"), title)
    plots.confusion_matrix(matrix, classes, run.file("confusion.png"), f"{title} — validation")
    plots.top_losses(worst_images(state.split.val, rows), run.file("top_losses.png"), f"{title} — top losses")
    if state.head_fit and history:  # the converged head fit's one "epoch" never went through the loop
        state.log.epoch(history[-1])
    state.log.finish(matrix=matrix, classes=classes, best_epoch=result.best_epoch, title=f"{title} — validation",
                     hparams=hparams(state), metrics=result.metrics)
    if state.log.dir is not None:
        state.say(f"zoo train: TensorBoard log in {state.log.dir} (tensorboard --logdir {state.log.dir.parent})")


def hparams(state: RunState) -> dict[str, Any]:
    """The hyperparameters a run logs to TensorBoard's HParams dashboard."""
    cfg = state.cfg
    return {"backbone": cfg.backbone, "strategy": cfg.strategy, "epochs": state.epochs or "head-fit",
            "lr": state.lr if state.lr is not None else "head-fit", "batch_size": cfg.batch_size,
            "optimizer": cfg.optimizer, "weight_decay": cfg.weight_decay, "label_smoothing": cfg.label_smoothing,
            "augment": zaug.describe(state.augment), "head_init": cfg.head_init, "trainable_stages": cfg.trainable_stages,
            "image_size": state.data_cfg.image_size[0], "weights": str(cfg.weights), "precision": state.precision,
            "seed": cfg.seed}
