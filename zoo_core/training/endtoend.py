"""End-to-end training: images → backbone (the stages the strategy lets train) → head.

:class:`StagePhases` is the strategy phase setup: which backbone stages train from an epoch on and the
optimizer groups over them (discriminative LRs, :func:`zoo_core.strategies.param_groups`); a new phase
refreezes the model, builds a new optimizer and, under torchrun, wraps the model in DDP again.

Seams: ``strategies.param_groups`` and ``strategies.make_optimizer`` are called through the module.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import data as zdata
from .. import strategies
from ..data import augment as zaug
from ..distributed import DistContext, per_rank_batch
from . import report, steps, surgical
from .inputs import eval_dataset, sampler_for
from .loop import Fit, run_epochs
from .setup import RunState, Trained


class StagePhases:
    """The strategy's phases: per epoch, how many top backbone stages train, and the optimizer over them."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.k: int | None = None  # stages training in the current phase
        self.module: nn.Module = state.model  # the model of the current phase (DDP-wrapped under torchrun)

    def setup(self, epoch: int, optimizer: torch.optim.Optimizer | None) -> tuple[int, torch.optim.Optimizer]:
        """``(k, optimizer)`` for ``epoch``: the same optimizer while ``k`` stays, else a new phase."""
        s, cfg = self.state, self.state.cfg
        n = len(s.stages)
        k = s.strategy.trainable_stages(epoch, n, cfg.trainable_stages, cfg.head_epochs)
        choice = surgical.chosen(s)  # --strategy auto: the stages its trials chose
        if choice is not None:
            k = len(choice.stages)
        if k == self.k and optimizer is not None:
            return k, optimizer
        self.k = k
        if choice is not None:
            groups = surgical.stage_groups(s, choice)
        else:
            strategies.apply_stages(s.model, s.adapter, k, n, freeze_bn_stats=s.freeze_bn_stats)
            groups = strategies.param_groups(s.model, s.stages, s.head, lr=s.lr, weight_decay=cfg.weight_decay,
                                             backbone_lr_mult=cfg.backbone_lr_mult, layer_decay=cfg.layer_decay)
        report.phase_line(s, epoch, k, len(groups))
        self.module = s.ctx.wrap(s.model, s.device)
        return k, surgical.make_optimizer(s, groups)


class _PhaseModule(nn.Module):
    """Forwards to the model of the current phase; evaluation bypasses DDP (no per-batch collectives, so
    ranks may run unequal numbers of batches)."""

    def __init__(self, phases: StagePhases) -> None:
        super().__init__()
        self.phases = phases  # a plain object: the model is not registered as a child a second time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.phases.module(x) if self.training else self.phases.state.model(x)

    def train(self, mode: bool = True) -> _PhaseModule:
        self.phases.state.model.train(mode)
        self.training = mode
        return self


def _val_loader(state: RunState, batch_size: int, quiet: bool) -> DataLoader:
    """The validation images of this rank (each item once over all ranks)."""
    cfg, ctx = state.cfg, state.ctx
    val_ds = eval_dataset(cfg, state.split, "val", state.data_cfg, ctx, quiet)
    return zdata.make_loader(val_ds, batch_size=batch_size, shuffle=False, seed=cfg.seed,
                             num_workers=cfg.num_workers, sampler=sampler_for(len(val_ds), cfg.seed, ctx, False),
                             device=state.device)


def _train_dataset(state: RunState) -> Dataset:
    """The training images through the run's augmentations: random crops decode every epoch; without them the
    images are decoded once (the shared pixel cache when on) and only mirrored per epoch when flipping."""
    if zaug.crop_of(state.augment) is not None:
        return zdata.Transformed(state.split.train, zaug.train_transform(state.data_cfg, state.augment))
    images = eval_dataset(state.cfg, state.split, "train", state.data_cfg, state.ctx, state.quiet)
    return zdata.Transformed(images, zaug.on_decoded(state.augment)) if state.augment else images


def fit(state: RunState) -> Trained:
    """Train the model end to end for ``state.epochs`` epochs with the strategy's phases."""
    cfg, ctx, data_cfg, device = state.cfg, state.ctx, state.data_cfg, state.device
    train_ds = _train_dataset(state)
    batch = per_rank_batch(cfg.batch_size, ctx.world_size)  # cfg.batch_size is the global batch
    sampler = sampler_for(len(train_ds), cfg.seed, ctx, shuffle=True)
    train_loader = zdata.make_loader(train_ds, batch_size=batch, shuffle=False, seed=cfg.seed + 1_000_003 * ctx.rank,
                                     num_workers=cfg.num_workers, sampler=sampler, device=device)
    val_loader = _val_loader(state, batch, state.quiet)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    state.model.to(device, memory_format=memory_format)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        return zdata.normalize(x, data_cfg).contiguous(memory_format=memory_format)

    phases = StagePhases(state)
    return run_epochs(state, Fit(
        module=_PhaseModule(phases), model=state.model, train_loader=train_loader, sampler=sampler,
        val_loader=val_loader, prepare=prepare, amp=state.amp, scaler=state.scaler, ctx=ctx,
        setup_phase=phases.setup, record={**state.record, "batch_size_per_rank": batch},
        start=state.probe["row"] if state.shape.from_probe and state.probe else None))


def final_predictions(state: RunState) -> report.ValPredictions:
    """The (best) model's prediction for every validation image, in item order (each rank evaluates its
    shard, ``range(rank, n, world_size)``; the shards are gathered and interleaved)."""
    ctx, device = state.ctx, state.device
    loader = _val_loader(state, max(1, state.cfg.batch_size // ctx.world_size), True)
    ev = steps.evaluate(state.model, loader, lambda x: zdata.normalize(x.to(device), state.data_cfg), state.amp,
                        num_classes=state.num_classes, ctx=DistContext(), device=device, want_preds=True)
    probs, targets = ev["probs"], ev["targets"]
    if ctx.enabled:
        shards = ctx.all_gather_object((probs, targets))
        probs = torch.empty(len(state.split.val), state.num_classes)
        targets = torch.empty(len(state.split.val), dtype=torch.long)
        for rank, (p, t) in enumerate(shards):
            probs[rank::ctx.world_size], targets[rank::ctx.world_size] = p, t
    return report.ValPredictions(probs=probs, targets=targets)
