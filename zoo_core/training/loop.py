"""The epoch loop shared by end-to-end training and head training on cached features.

:func:`run_epochs` reads top to bottom: per epoch, (re)set the strategy's phase, train, evaluate, keep
the best checkpoint, save ``last.pt``, log, and stop early. The policy around it lives in small named
functions: :func:`lr_schedule`, :mod:`~zoo_core.training.stopping` (early stopping on the
validation loss, the budget that grows while it falls) and :func:`diverged` (the error of a non-finite loss). What trains in each phase is the
path's ``setup_phase`` (``endtoend.StagePhases``, ``cached.head_phase``); files go through
:mod:`~zoo_core.training.checkpoint` and lines through :mod:`~zoo_core.training.report`.

Seams: training and evaluation go through ``steps.train_one_epoch`` / ``steps.evaluate``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import strategies
from ..backbones.freezing import count_parameters
from ..distributed import DistContext
from ..errors import TrainingError
from . import report, steps, stopping
from .checkpoint import Checkpoints, Resume
from .config import TrainConfig
from .setup import RunState, Trained

Phase = Callable[[int, Any], tuple[Any, torch.optim.Optimizer]]
"""``setup_phase(epoch, optimizer) → (phase, optimizer)``: what trains in ``epoch``; the same optimizer
while the phase lasts, a new one when it changes."""


@dataclass
class Fit:
    """What the loop trains, as a path (``endtoend`` or ``cached``) set it up."""

    module: nn.Module  # called for training and evaluation
    model: nn.Module  # the whole model: BatchNorm buffers synced, trainable count, best.pt
    train_loader: DataLoader
    sampler: Any  # set_epoch(epoch) before each epoch
    val_loader: DataLoader
    prepare: Callable[[torch.Tensor], torch.Tensor]  # a loader's batch → the module's input
    amp: Callable[[], Any]
    scaler: torch.amp.GradScaler | None
    ctx: DistContext  # the loop's collectives (one process for cached features)
    setup_phase: Phase
    record: dict[str, Any]  # written to config.json
    head: str | None = None  # cached features: only this head trains (see checkpoint.Checkpoints)
    start: dict[str, Any] | None = None  # LP-FT: the probe's metrics row, epoch 0 (the state to beat)


def run_epochs(state: RunState, fit: Fit) -> Trained:
    """Train ``fit`` for ``state.epochs`` epochs (continuing ``last.pt`` when ``state.resume``); without
    ``--epochs`` the budget grows while the validation loss falls (:mod:`~zoo_core.training.stopping`)."""
    cfg, run = state.cfg, state.run
    steps_per_epoch = min(len(fit.train_loader), cfg.max_steps or len(fit.train_loader))
    ckpt = Checkpoints(state, fit.model, fit.head, fit.ctx)
    at = ckpt.resume() if state.resume else Resume()
    if state.resume:
        report.resuming(state, at.epoch)
    end = at.end if at.end and cfg.epochs is None else state.epochs  # the budget as extended before a resume
    state = dataclasses.replace(state, epochs=end)
    lr_at = lr_schedule(cfg, steps_per_epoch, end)
    run.write_json("config.json", fit.record)
    history, best, step = at.history, at.best, at.step
    if fit.start is not None and not state.resume:  # LP-FT: epoch 0 is the probe; best.pt until an epoch beats it
        best = {"val_loss": fit.start["val_loss"], "epoch": 0}
        ckpt.improved(0, fit.start)
    if state.resume and stopping.should_stop(cfg, stopping.stale_epochs(history)):
        report.early_stop(state, stopping.stale_epochs(history), best["epoch"], before=True)
        ckpt.flush_best(history, best)
        return Trained(history, best, fit.record)
    phase = optimizer = None
    epoch = at.epoch
    while epoch < end:
        phase, optimizer = fit.setup_phase(epoch, optimizer)
        if epoch == at.epoch:
            at.restore_optimizer(optimizer, phase)
        fit.sampler.set_epoch(epoch)
        try:
            with report.epoch_bar(state, steps_per_epoch, epoch) as bar:
                train, step = steps.train_one_epoch(
                    fit.module, fit.train_loader, fit.prepare, fit.amp, fit.scaler, optimizer, lr_at, step,
                    label_smoothing=cfg.label_smoothing, max_steps=cfg.max_steps, bar=bar, ctx=fit.ctx,
                    device=state.device)
        except FloatingPointError as exc:
            ckpt.flush_best(history, best)
            raise diverged(state, f"{exc} in epoch {epoch + 1}", best) from None
        fit.ctx.sync_module(fit.model, buffers_only=True)  # rank 0's BatchNorm statistics: the ones checkpointed
        val = steps.evaluate(fit.module, fit.val_loader, fit.prepare, fit.amp, num_classes=state.num_classes,
                             ctx=fit.ctx, device=state.device)
        if not math.isfinite(val["val_loss"]):
            ckpt.flush_best(history, best)
            raise diverged(state, f"validation loss is {val['val_loss']} after epoch {epoch + 1}", best)
        row = {"epoch": epoch + 1, **train, **val, "lr": max(g["lr"] for g in optimizer.param_groups),
               "trainable_params": count_parameters(fit.model)[1]}
        history.append(rounded(row))
        if val["val_loss"] < best["val_loss"]:
            best = {"val_loss": val["val_loss"], "epoch": epoch + 1}
            ckpt.improved(epoch + 1, row)
        longer = stopping.extended_end(cfg, history, end)  # still improving at the end of the budget
        ckpt.save_last(epoch=epoch + 1, step=step, optimizer=optimizer, history=history, best=best, phase=phase,
                       end=longer)
        run.write_metrics(history)
        state.log.epoch(history[-1], optimizer, lr_at, range(step - steps_per_epoch, step))
        report.epoch_line(state, epoch, train, val)
        epoch += 1
        if longer != end:
            state.say(f"zoo train: val loss still falling at epoch {epoch} (best of the run): budget extended to "
                      f"{longer} epochs (at most {stopping.cap(cfg)}; --epochs sets the length)")
            end, state = longer, dataclasses.replace(state, epochs=longer)
            lr_at = lr_schedule(cfg, steps_per_epoch, end)  # the cosine runs to the new end, as a resume's would
        if stopping.should_stop(cfg, stopping.stale_epochs(history)):
            break
    if history and epoch > at.epoch:
        state.say(f"zoo train: {stopping.why_stopped(cfg, history, best, end)}")
    ckpt.flush_best(history, best)
    return Trained(history, best, fit.record)


def lr_schedule(cfg: TrainConfig, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
    """LR multiplier per global step: linear warm-up over ``cfg.warmup_epochs``, then cosine to the end."""
    return strategies.warmup_cosine(steps_per_epoch * epochs, int(cfg.warmup_epochs * steps_per_epoch))


def diverged(state: RunState, what: str, best: dict[str, Any]) -> TrainingError:
    """The one-line error for a non-finite loss, saying what is kept and what to change."""
    kept = (f"the best checkpoint (epoch {best['epoch']}) is kept at {state.run.file('best.pt')}"
            if math.isfinite(best["val_loss"]) else "no checkpoint was saved")
    fix = "Lower the learning rate (--lr)" + (" or use --precision fp32" if state.precision != "fp32" else "")
    return TrainingError(f"{state.cfg.backbone}: {what}; stopped, {kept}. {fix}.")


def rounded(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row as the history keeps it (floats to 6 decimals)."""
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
