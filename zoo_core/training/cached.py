"""The cached-feature path: a frozen backbone without augmentation runs once over the data
(:func:`zoo_core.cache.split_features`, kept in the feature cache, or in memory with ``cache_features``
off; sharded under torchrun) and only the head trains, on the cached features: the converged L-BFGS fit (:func:`zoo_core.headfit.fit_linear_head`)
when ``epochs`` is None, else ``epochs`` epochs of the shared loop (:func:`head_phase`).

Seams: ``headfit.fit_linear_head`` is called through its module.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .. import cache, headfit, strategies
from ..backbones.freezing import count_parameters
from ..distributed import DistContext
from ..errors import TrainingError
from . import report, steps
from .checkpoint import checkpoint
from .inputs import EpochSampler
from .loop import Fit, rounded, run_epochs
from .setup import RunState, Trained

# cache_features off: the validation features a run extracted in memory, kept for its final predictions
_KEPT: weakref.WeakKeyDictionary[nn.Module, cache.FeatureSet] = weakref.WeakKeyDictionary()


def extract(state: RunState, names: tuple[str, ...], ctx: DistContext | None, quiet: bool) -> dict[str, Any]:
    """The backbone's features of the ``names`` splits (``FeatureSet`` each), from the cache when there
    (:func:`zoo_core.cache.split_features`); with the disk cache off, extracted once and held in memory."""
    out = {}
    for name in names:
        kept = _KEPT.pop(state.model, None) if name == "val" and not state.cfg.cache_features else None
        out[name] = kept or cache.split_features(state.cfg, state.split, name, state.model, state.adapter,
                                                 state.data_cfg, state.device, ctx, quiet=quiet)
    if "train" in names and not state.cfg.cache_features:
        _KEPT[state.model] = out["val"]
    return out


def fit(state: RunState) -> Trained:
    """Extract (or read) the features, then fit the head on them."""
    strategies.apply_stages(state.model, state.adapter, 0, len(state.stages))  # the backbone never trains here
    fx = extract(state, ("train", "val"), state.ctx, state.quiet)  # sharded under torchrun
    hit = fx["train"].from_cache and fx["val"].from_cache
    head = state.model.get_submodule(state.head)
    trainable = count_parameters(head)[1]
    report.features_line(state, tuple(fx["train"].features.shape), hit, trainable)
    head.to(state.device)
    record = {**state.record, "feature_cache_hit": hit}
    if state.epochs is None:
        return _converged_head(state, fx, head, record)
    return run_epochs(state, _head_epochs(state, fx, head, record))


def converge_head(state: RunState, fx: dict[str, Any], head: nn.Module) -> tuple[headfit.HeadFit, dict[str, Any]]:
    """Fit ``head`` to convergence on the training features (L-BFGS logistic regression, its L2 picked on an
    inner split) and score it on every split of ``fx``: the fit and its metrics row (epoch 1)."""
    cfg, device = state.cfg, state.device
    fit = headfit.fit_linear_head(fx["train"].features, fx["train"].labels, state.num_classes, seed=cfg.seed,
                                  label_smoothing=cfg.label_smoothing)
    if not (torch.isfinite(fit.weight).all() and torch.isfinite(fit.bias).all()):
        raise TrainingError(f"{cfg.backbone}: the converged head fit gave non-finite weights (the features "
                            "hold NaN/inf); no checkpoint was saved. Use --precision fp32 or other weights.")
    head.to(device)
    with torch.no_grad():
        head.weight.copy_(fit.weight)
        head.bias.copy_(fit.bias)
    state.ctx.sync_module(head)  # the fit runs identically on every rank; make it bit-identical
    ev = {s: evaluate_features(state, head, fx[s]) for s in fx}
    row = {"epoch": 1, "train_loss": ev["train"]["val_loss"], "train_acc": ev["train"]["val_acc"],
           **ev["val"], "images_per_s": None, "epoch_seconds": round(fit.seconds, 4), "lr": None,
           "trainable_params": count_parameters(head)[1]}
    return fit, rounded(row)


def evaluate_features(state: RunState, head: nn.Module, features: cache.FeatureSet, *,
                      want_preds: bool = False) -> dict[str, Any]:
    """Loss and top-1/top-5 (``val_*`` keys) of ``head`` on cached ``features``."""
    loader = DataLoader(TensorDataset(features.features, features.labels), batch_size=1024)
    return steps.evaluate(head, loader, lambda x: x.to(state.device), contextlib.nullcontext,
                          num_classes=state.num_classes, ctx=DistContext(), device=state.device, want_preds=want_preds)


def _converged_head(state: RunState, fx: dict[str, Any], head: nn.Module, record: dict[str, Any]) -> Trained:
    """L-BFGS logistic regression to convergence, its L2 picked on an inner split: one "epoch"."""
    fit, row = converge_head(state, fx, head)
    record = {**record, "head_fit": fit.config()}
    report.head_fit_line(state, fit)
    history = [row]
    state.run.write_json("config.json", record)
    state.run.save("best.pt", checkpoint(state, state.model.state_dict(), epoch=1, metrics=row))
    state.run.write_metrics(history)
    report.val_line(state, row)
    return Trained(history, {"val_loss": row["val_loss"], "epoch": 1}, record)


def head_phase(state: RunState, head: nn.Module) -> Any:
    """The only phase of head training: one optimizer over the head's parameters, at the head's LR."""
    cfg = state.cfg

    def setup(epoch: int, optimizer: torch.optim.Optimizer | None) -> tuple[str, torch.optim.Optimizer]:
        if optimizer is not None:
            return "head", optimizer
        groups = strategies.param_groups(head, [], "", lr=state.lr, weight_decay=cfg.weight_decay,
                                         backbone_lr_mult=0, layer_decay=1)
        return "head", strategies.make_optimizer(groups, cfg.optimizer, cfg.momentum)

    return setup


def _head_epochs(state: RunState, fx: dict[str, Any], head: nn.Module, record: dict[str, Any]) -> Fit:
    """The loop's view of head training on the cached features (one process: the features are whole)."""
    cfg, device = state.cfg, state.device
    train_ds = TensorDataset(fx["train"].features, fx["train"].labels)
    val_ds = TensorDataset(fx["val"].features, fx["val"].labels)
    sampler = EpochSampler(len(train_ds), cfg.seed, shuffle=True)
    return Fit(module=head, model=state.model, train_loader=DataLoader(train_ds, batch_size=cfg.batch_size,
               sampler=sampler), sampler=sampler, val_loader=DataLoader(val_ds, batch_size=max(cfg.batch_size, 256)),
               prepare=lambda x: x.to(device), amp=contextlib.nullcontext, scaler=None, ctx=DistContext(),
               setup_phase=head_phase(state, head), record=record, head=state.head)


def final_predictions(state: RunState) -> report.ValPredictions:
    """The (best) head's prediction for every validation image from the cached features (rank 0's, sent to
    all ranks)."""
    out = None
    if state.ctx.is_main:
        fv = extract(state, ("val",), None, True)["val"]
        with torch.no_grad():
            logits = state.model.get_submodule(state.head)(fv.features.to(state.device)).float()
        out = report.ValPredictions(probs=logits.softmax(1).cpu(), targets=fv.labels.cpu())
    return state.ctx.broadcast_object(out)
