"""Learning-rate range test (fastai's ``lr_find``) for strategies that train backbone layers.

The LR grows exponentially from ``start_lr`` to ``end_lr`` over ``num_steps`` mini-batches while the
smoothed training loss is recorded; the run stops early once the loss diverges. The suggestion is the
LR of the steepest descent of the smoothed loss, capped at a third of the LR of its minimum (first 10%
of the curve skipped; slope and minimum read over a third of a decade).

The model and the data come from :func:`~zoo_core.training.setup.build_run`, as in a training run, and the
test starts where that run's training starts: from the linear probe's head (LP-FT,
:mod:`~zoo_core.training.probe`; its features come from the cache the run filled) unless ``head_init="random"``;
``--lr auto`` runs the test through :func:`with_auto_lr`. Seams: the optimizer comes from
``strategies.param_groups`` / ``strategies.make_optimizer``, called through the module.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import data as zdata
from .. import logs, strategies
from ..errors import ZooError
from ..outputs.plots import _pyplot, _save, literal_text
from ..util import atomic_write_text, check_output_folder
from .config import TrainConfig, replace_options
from .options import check_values, integer, number
from .probe import with_probe
from .setup import RunState, build_run

_FROM_RUN = ("batch_size", "image_size", "weights", "seed", "optimizer", "momentum", "weight_decay",
             "backbone_lr_mult", "layer_decay", "trainable_stages", "augment", "head_init", "bn_stats", "precision",
             "cache_features", "share_decoding", "device", "num_workers")
"""The config fields a ``--lr auto`` run hands to its range test."""


@dataclass
class LRFindResult:
    """The recorded curve and the suggested learning rate."""

    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float
    plot: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"suggestion": self.suggestion, "lrs": self.lrs, "losses": self.losses,
                "plot": str(self.plot) if self.plot else None}


def suggest_lr(lrs: list[float], losses: list[float]) -> float:
    """Steepest-descent LR of the smoothed curve, no larger than (LR at min loss) / 3.

    Like fastai, the first 10% of the curve is ignored (the smoothing's warm-up: its noise made the very
    first LRs look steepest). Both the slope and the minimum are read over a window of about a third of a
    decade on each side, so that the noise of single steps picks neither the steepest point nor a
    spurious late minimum.
    """
    n = len(lrs)
    if n < 3:
        return lrs[0] if lrs else 1e-3
    start = n // 10
    logs = [math.log10(x) for x in lrs]
    half = max(1, round((n - 1) / max(logs[-1] - logs[0], 1e-12) / 3))  # points in a third of a decade
    smooth = {}
    for i in range(start, n):
        window = [v for v in losses[max(start, i - half):i + half + 1] if math.isfinite(v)]
        smooth[i] = sum(window) / len(window) if window else math.inf
    i_min = min(smooth, key=smooth.__getitem__)
    best, i_steep = math.inf, start
    for i in range(start, i_min):
        lo, hi = max(start, i - half), min(n - 1, i + half)
        slope = (losses[hi] - losses[lo]) / (logs[hi] - logs[lo])
        if slope < best:
            best, i_steep = slope, i
    return float(min(lrs[i_steep], lrs[i_min] / 3))


def lr_find(backbone: str, data: Any, *, strategy: str = "full", start_lr: float = 1e-7, end_lr: float = 1.0,
            num_steps: int = 100, out: str | Path | None = None, progress: bool = True,
            **overrides: Any) -> LRFindResult:
    """Run the LR range test for ``backbone`` on ``data`` with ``strategy``'s trainable layers.

    ``overrides`` are :class:`zoo_core.TrainConfig` fields (batch_size, image_size, weights, seed, …).
    ``out`` is a directory for ``lr_find.png`` and ``lr_find.json``.
    """
    check_values({"--start-lr": (start_lr, number(0, above=True)), "--end-lr": (end_lr, number(0, above=True)),
                  "--steps": (num_steps, integer(2))})
    if out is not None:
        check_output_folder(out, "--out")
    if start_lr >= end_lr:
        raise ZooError(f"--start-lr ({start_lr:g}) must be below --end-lr ({end_lr:g}): the range test raises the LR")
    cfg = replace_options(TrainConfig(backbone=backbone, strategy=strategy), overrides)
    state = with_probe(build_run(dataclasses.replace(cfg, lr=None, progress=progress), data))  # as the run starts
    model, opt, loader = _range_test_setup(state)
    lrs, losses = _range_test(model, loader, opt, state, start_lr, end_lr, num_steps, progress)
    result = LRFindResult(lrs, losses, suggest_lr(lrs, losses))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        result.plot = out / "lr_find.png"
        _plot(result, result.plot, f"{backbone} [{state.strategy.name}]")
        atomic_write_text(out / "lr_find.json", json.dumps(result.to_dict(), indent=2))
    logs.say(f"zoo lr-find: suggested learning rate {result.suggestion:.2e}", echo=progress)
    return result


def with_auto_lr(state: RunState) -> RunState:
    """``state`` with ``--lr auto`` replaced by the range test's suggestion (rank 0 decides for all ranks).

    The converged head fit has no learning rate: there ``auto`` becomes None without a test."""
    cfg = state.cfg
    if cfg.lr != "auto":
        return state
    if state.head_fit:
        return dataclasses.replace(state, cfg=dataclasses.replace(cfg, lr=None))
    found = None
    if state.ctx.is_main:
        out = state.run.path if state.run is not None else None
        res = lr_find(cfg.backbone, state.split, strategy=cfg.strategy, out=out, progress=not state.quiet,
                      num_steps=min(100, 10 * max(1, len(state.split.train) // cfg.batch_size)),
                      **{k: getattr(cfg, k) for k in _FROM_RUN})
        found = {"suggestion": res.suggestion, "plot": str(res.plot)}
    found = state.ctx.broadcast_object(found)
    lr = float(found["suggestion"])
    return dataclasses.replace(state, cfg=dataclasses.replace(cfg, lr=lr), lr_found=found)


def _range_test_setup(state: RunState) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    """The model with the strategy's final phase trainable, its optimizer (LR 1 per group) and a loader."""
    cfg, model = state.cfg, state.model
    n = len(state.stages)
    k = state.strategy.trainable_stages(10**6, n, cfg.trainable_stages, cfg.head_epochs)  # the final phase
    strategies.apply_stages(model, state.adapter, k, n, freeze_bn_stats=state.freeze_bn_stats)
    groups = strategies.param_groups(model, state.stages, state.head, lr=1.0, weight_decay=cfg.weight_decay,
                                     backbone_lr_mult=cfg.backbone_lr_mult, layer_decay=cfg.layer_decay)
    opt = strategies.make_optimizer(groups, cfg.optimizer, cfg.momentum)
    ds = zdata.Transformed(state.split.train, zdata.train_transform(state.data_cfg, state.augment))
    loader = zdata.make_loader(ds, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                               num_workers=cfg.num_workers, device=state.device)
    model.to(state.device).train()
    return model, opt, loader


def _range_test(model: nn.Module, loader: Any, opt: torch.optim.Optimizer, state: RunState, start_lr: float,
                end_lr: float, num_steps: int, progress: bool) -> tuple[list[float], list[float]]:
    lrs: list[float] = []
    losses: list[float] = []
    gamma = (end_lr / start_lr) ** (1 / max(1, num_steps - 1))
    avg, best, step = 0.0, math.inf, 0
    bar = tqdm(total=num_steps, desc="lr-find", disable=not logs.progress(progress), leave=False, file=sys.stderr)
    while step < num_steps:
        for x, y in loader:
            lr = start_lr * gamma**step
            strategies.set_lr(opt, lr)
            x = zdata.normalize(x.to(state.device), state.data_cfg)
            loss = nn.functional.cross_entropy(model(x).float(), y.to(state.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            avg = 0.9 * avg + 0.1 * float(loss.detach())
            smoothed = avg / (1 - 0.9 ** (step + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            step += 1
            bar.update(1)
            if step >= num_steps or not math.isfinite(smoothed) or smoothed > 4 * best:
                step = num_steps
                break
    bar.close()
    return lrs, losses


@literal_text
def _plot(result: LRFindResult, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(result.lrs, result.losses)
    ax.axvline(result.suggestion, color="red", linestyle="--", label=f"suggested {result.suggestion:.1e}")
    ax.set(xscale="log", xlabel="learning rate (log)", ylabel="smoothed training loss", title=f"LR range test: {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
