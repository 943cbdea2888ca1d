"""``--strategy auto``: short LP-FT trials choose which backbone stages fine-tune (surgical fine-tuning).

Which layers to tune depends on the shift between the pretraining data and the user's: the first stage for
input-level shifts (colour, texture, sensor), middle stages for feature-level shifts, the last stage (or just
the head) for label-level ones (Lee et al., ICLR 2023, "Surgical Fine-Tuning Improves Adaptation to
Distribution Shifts"). After the linear probe, every :func:`choices` entry — the last stage, the last half,
all stages, the first stage, and Auto-RGN (every stage, each tensor's learning rate scaled by its relative
gradient norm ``|g| / |w|`` over the largest, recomputed each step) — fine-tunes a copy of the probe's
starting state for :data:`TRIAL_EPOCHS` epochs on a stratified subsample of the training images (decoded
once, no augmentation; at most :data:`TRIAL_TRAIN` images and a :data:`TRIAL_SHARE` of the split) and is
scored on a stratified subsample of the validation images. The frozen stages below a trial's lowest trainable
one come from one cached forward (:mod:`zoo_core.training.prefix`). The choice with the lowest validation loss
among those that beat the probe's by :data:`MIN_GAIN` nats and two paired standard errors trains on the whole
split; when none does the run fine-tunes only the last stage (the probe stays ``best.pt`` unless an epoch
beats it). Under torchrun the trials run on rank 0 and the record goes to every rank.

The trials run under a forked RNG (a cache hit or miss never shifts the run's draws); the record — every
trial's loss, top-1 with its Wilson interval, seconds, and the choice — goes to ``config.json``
(``surgical``) and ``surgical.png``; a resumed run reads its choice back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from .. import data as zdata
from .. import strategies
from ..backbones.freezing import freeze_all_but, lock_norm_statistics
from ..distributed import DistContext, per_rank_batch
from ..headfit.split import stratified_subsample
from ..outputs.plots import trial_bars
from ..stats import wilson_interval
from . import cached, prefix, steps
from .inputs import eval_dataset
from .probe import _own_rng
from .setup import RunState

TRIAL_TRAIN = 320
"""Training images each trial fine-tunes on (a stratified subsample, the same for every trial)."""

TRIAL_VAL = 250
"""Validation images each trial is scored on (stratified, the same for every trial and the probe)."""

TRIAL_EPOCHS = 2
"""Epochs of each trial over its subsample."""

TRIAL_SHARE = 0.25
"""The largest share of the training split the trials' subsample takes (small data: fewer trial images)."""

MIN_GAIN = 0.01
"""Nats per validation image a trial must lower the probe's loss by to be chosen (and two standard errors)."""

SEED = 7919  # the subsamples' seed (fixed: every trial and a resumed run see the same images)


@dataclass(frozen=True)
class Choice:
    """Which backbone stages fine-tune (indices, input → output) and whether Auto-RGN sets their LRs."""

    name: str
    stages: tuple[int, ...]
    rgn: bool = False


def choices(n: int) -> list[Choice]:
    """The trial candidates for a backbone of ``n`` stages (duplicates of the same stage set dropped)."""
    if n == 0:
        return []
    half = (n + 1) // 2
    out, seen = [], set()
    for c in (Choice("last", (n - 1,)), Choice("last-half", tuple(range(n - half, n))),
              Choice("all", tuple(range(n))), Choice("first", (0,)), Choice("auto-rgn", tuple(range(n)), True)):
        if (c.stages, c.rgn) not in seen:
            seen.add((c.stages, c.rgn))
            out.append(c)
    return out


def chosen(state: RunState) -> Choice | None:
    """The run's choice (``state.surgical``), None for every other strategy."""
    rec = state.surgical
    if not rec:
        return None
    c = rec["chosen"]
    return Choice(c["name"], tuple(c["stages"]), bool(c["rgn"]))


def stage_groups(state: RunState, choice: Choice) -> list[dict]:
    """Freeze all but the head and ``choice``'s stages; their optimizer groups (Auto-RGN: one per tensor, at
    the backbone's learning rate before the per-step scaling)."""
    s, cfg = state, state.cfg
    freeze_all_but(s.model, s.stages, s.head, choice.stages)
    if s.freeze_bn_stats:
        lock_norm_statistics(s.model)
    groups = strategies.param_groups(s.model, s.stages, s.head, lr=s.lr, weight_decay=cfg.weight_decay,
                                     backbone_lr_mult=cfg.backbone_lr_mult,
                                     layer_decay=1.0 if choice.rgn else cfg.layer_decay)
    if not choice.rgn:
        return groups
    out: list[dict] = []
    for g in groups:
        out += [g] if g["name"] == "head" else [{**g, "params": [p], "rgn": True} for p in g["params"]]
    return out


def make_optimizer(state: RunState, groups: list[dict]) -> torch.optim.Optimizer:
    """The run's optimizer over ``groups``; with Auto-RGN groups, each step first scales their LRs."""
    optimizer = strategies.make_optimizer(groups, state.cfg.optimizer, state.cfg.momentum)
    if any(g.get("rgn") for g in optimizer.param_groups):
        optimizer.register_step_pre_hook(_rgn_scale)
    return optimizer


def _rgn_scale(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Auto-RGN: each tensor's LR times its relative gradient norm over the largest one this step."""
    rgn = [g for g in optimizer.param_groups if g.get("rgn") and g["params"][0].grad is not None]
    if not rgn:
        return
    ratios = torch.stack([g["params"][0].grad.detach().float().norm()
                          / (g["params"][0].detach().float().norm() + 1e-12) for g in rgn])
    ratios = (ratios / ratios.max().clamp_min(1e-12)).tolist()
    for g, r in zip(rgn, ratios):
        g["lr"] *= r


def with_choice(state: RunState) -> RunState:
    """``state`` with ``surgical`` set for ``--strategy auto`` (trials run on rank 0 and its record sent to every
    rank, or a resumed run's record)."""
    if state.cfg.strategy != "auto":
        return state
    if state.resume:
        return dataclasses.replace(state, surgical=state.run.read_json("config.json").get("surgical"))
    record = None
    if state.ctx.is_main:
        with _own_rng(state.device):
            record = run_trials(state)
    record = state.ctx.broadcast_object(record)
    _report(state, record)
    return dataclasses.replace(state, surgical=record)


def trial_sizes(n_train: int, n_val: int) -> tuple[int, int]:
    """(train, val) images of the trial subsamples: at most :data:`TRIAL_TRAIN` / :data:`TRIAL_VAL`, and at most
    a :data:`TRIAL_SHARE` of the training split, so the trials cost a fixed fraction of a fine-tuned epoch."""
    return min(TRIAL_TRAIN, max(1, int(n_train * TRIAL_SHARE))), min(TRIAL_VAL, n_val)


def _subsample(state: RunState, split: str, labels: torch.Tensor, cap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A stratified subsample of ``split`` decoded once: (uint8 images, labels)."""
    rows = stratified_subsample(torch.arange(len(labels)), labels, cap, SEED)
    ds = eval_dataset(state.cfg, state.split, split, state.data_cfg, DistContext(), True)
    return torch.stack([ds[int(i)][0] for i in rows]), labels[rows]


def run_trials(state: RunState) -> dict[str, Any]:
    """Fine-tune each of :func:`choices` briefly from the current model (the probe's start); the record."""
    device, model = state.device, state.model
    fx = cached.extract(state, ("train", "val"), DistContext(), True)  # the probe's features: only the labels
    n_train, n_val = trial_sizes(len(fx["train"].labels), len(fx["val"].labels))
    xt, yt = _subsample(state, "train", fx["train"].labels, n_train)
    xv, yv = _subsample(state, "val", fx["val"].labels, n_val)
    model.to(device)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    plan = choices(len(state.stages))
    batch = per_rank_batch(state.cfg.batch_size, 1)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return zdata.normalize(x.to(device), state.data_cfg)

    t0 = time.perf_counter()
    frozen = prefix.build(model, state.stages, [min(c.stages) for c in plan], {"train": xt, "val": xv}, prepare,
                          state.amp, batch)
    cache_s = time.perf_counter() - t0
    losses: dict[str, torch.Tensor] = {}
    trials = [_score(state, "probe", _Inputs(xv, yv, prepare, None, 0), 0.0, losses)]
    for c in plan:
        t0 = time.perf_counter()
        model.load_state_dict(start)
        lowest = min(c.stages)
        cache = frozen if frozen.has(lowest) else None
        ins = _Inputs(xt, yt, prepare, cache, lowest, "train")
        with cache.skipping(model, lowest) if cache else contextlib.nullcontext():
            _train_trial(state, c, model, ins.dataset(), ins.prepare)
            val = _Inputs(xv, yv, prepare, cache, lowest, "val")
            trials.append(_score(state, c.name, val, time.perf_counter() - t0, losses, c))
    model.load_state_dict(start)
    pick, beaten = _pick(trials, losses)
    return {"trials": trials, "chosen": {k: pick[k] for k in ("name", "stages", "rgn")} if pick else None,
            "beat_probe": beaten, "train_images": len(yt), "val_images": len(yv), "epochs": TRIAL_EPOCHS,
            "prefix_cached": sorted(frozen.boundaries), "prefix_seconds": round(cache_s, 3)}


def _pick(trials: list[dict[str, Any]], losses: dict[str, torch.Tensor]) -> tuple[dict[str, Any] | None, bool]:
    """The trial with the lowest val loss among those that beat the probe by more than :data:`MIN_GAIN` nats and
    two standard errors of the paired per-image difference; else ``last`` (the cheapest). (pick, beaten)."""
    def gain(t: dict[str, Any]) -> bool:
        d = losses["probe"] - losses[t["name"]]
        se = float(d.std() / len(d) ** 0.5) if len(d) > 1 else 0.0
        return float(d.mean()) > max(MIN_GAIN, 2 * se)
    better = [t for t in trials[1:] if gain(t)]
    if better:
        return min(better, key=lambda t: t["val_loss"]), True
    return next((t for t in trials if t["name"] == "last"), trials[1] if len(trials) > 1 else None), False


@dataclass
class _Inputs:
    """A trial's images: decoded pixels, or the cached inputs of its boundary (``cache``) addressed by row."""

    x: torch.Tensor
    y: torch.Tensor
    normalize: Callable[[torch.Tensor], torch.Tensor]
    cache: prefix.PrefixCache | None
    lowest: int
    part: str = "val"

    def dataset(self) -> TensorDataset:
        """(pixels or row numbers, labels)."""
        return TensorDataset(self.x if self.cache is None else torch.arange(len(self.y)), self.y)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input for a batch: normalized pixels, or (cache) zeros of that shape, its rows selected."""
        if self.cache is None:
            return self.normalize(x)
        rows = self.cache.rows(self.lowest, self.part)
        self.cache.select(rows[x.to(rows.device)])
        return torch.zeros((len(x), *self.x.shape[1:]), device=rows.device)


def _score(state: RunState, name: str, ins: _Inputs, seconds: float, losses: dict[str, torch.Tensor],
           c: Choice | None = None) -> dict[str, Any]:
    """One trial's (or the probe's) record on the validation subsample; its per-image losses into ``losses``."""
    val = DataLoader(ins.dataset(), batch_size=per_rank_batch(state.cfg.batch_size, 1))
    ev = steps.evaluate(state.model, val, ins.prepare, state.amp, num_classes=state.num_classes, ctx=DistContext(),
                        device=state.device, want_preds=True)
    right = int((ev["preds"] == ev["targets"]).sum())
    losses[name] = -ev["probs"].float().gather(1, ev["targets"].long().view(-1, 1)).clamp_min(1e-12).log().flatten()
    low, high = wilson_interval(right, len(ins.y))
    return {"name": name, "stages": list(c.stages) if c else [], "rgn": bool(c and c.rgn),
            "val_loss": round(ev["val_loss"], 6), "val_acc": round(ev["val_acc"], 6),
            "ci": [round(low, 6), round(high, 6)], "seconds": round(seconds, 3)}


def _train_trial(state: RunState, c: Choice, model: torch.nn.Module, ds: TensorDataset, prepare: Any) -> None:
    """:data:`TRIAL_EPOCHS` epochs of choice ``c`` over ``ds`` with the run's optimizer and schedule."""
    cfg = state.cfg
    optimizer = make_optimizer(state, stage_groups(state, c))
    loader = DataLoader(ds, batch_size=per_rank_batch(cfg.batch_size, 1), shuffle=True,
                        generator=torch.Generator().manual_seed(SEED))
    per_epoch = min(len(loader), cfg.max_steps or len(loader))
    lr_at = strategies.warmup_cosine(per_epoch * TRIAL_EPOCHS, int(cfg.warmup_epochs * per_epoch))
    scaler = None if state.scaler is None else torch.amp.GradScaler(state.device.type)
    step = 0
    for _ in range(TRIAL_EPOCHS):
        with tqdm(disable=True) as bar:
            _, step = steps.train_one_epoch(model, loader, prepare, state.amp, scaler, optimizer, lr_at, step,
                                            label_smoothing=cfg.label_smoothing, max_steps=cfg.max_steps, bar=bar,
                                            ctx=DistContext(), device=state.device)


def _report(state: RunState, record: dict[str, Any]) -> None:
    """The trials' table on stderr and ``surgical.png`` (top-1 by choice, 95 % intervals)."""
    names = [s for s, _ in state.stages]
    lines = [f"zoo train: auto — LP-FT trials ({record['epochs']} epochs on {record['train_images']} train images, "
             f"scored on {record['val_images']} val images):"]
    for t in record["trials"]:
        what = "linear probe" if t["name"] == "probe" else ", ".join(names[i] for i in t["stages"])
        lines.append(f"  {t['name']:<10} val loss {t['val_loss']:.4f} top-1 {100 * t['val_acc']:5.1f}% "
                     f"[{100 * t['ci'][0]:.1f}, {100 * t['ci'][1]:.1f}] {t['seconds']:6.1f}s  ({what})")
    pick = record["chosen"]
    if pick:
        why = "lowest trial val loss" if record["beat_probe"] else "no trial beat the probe; the cheapest"
        lines.append(f"zoo train: auto chose {pick['name']} ({why}); it trains on the whole split")
    state.say("\n".join(lines))
    if state.run is not None and state.ctx.is_main:
        trial_bars(record["trials"], state.run.file("surgical.png"),
                   title=f"{state.cfg.backbone}: which stages to fine-tune (trials)")
