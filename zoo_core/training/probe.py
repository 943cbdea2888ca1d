"""LP-FT: the linear probe a fine-tuning run starts from, and the augmentation check made with it.

Before a strategy that trains backbone layers (``finetune``, ``full``, ``gradual``) takes its first step,
the pretrained backbone's features of the training and validation images — from the feature cache, under
the key a feature-extraction run of the same backbone uses, so a ``compare`` that runs both extracts once —
get the converged linear head (:func:`zoo_core.training.cached.converge_head`). Two things use it:

* ``head_init="probe"`` (the default): fine-tuning starts from that head instead of a random one. A random
  head's first, large gradients distort the pretrained features before the head is any good (Kumar et al.,
  ICLR 2022, "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution"). The
  probe's state is the run's epoch 0: its validation loss is the one to beat, so ``best.pt`` stays the
  probe when no fine-tuned epoch does better.
* ``augment="auto"`` (the default): each default augmentation (:mod:`zoo_core.data.augment`) is kept only when
  a probe's top-1 on the validation images seen through it is no more than
  :data:`zoo_core.data.augment.CHECK_TOLERANCE` below its top-1 without it, or the drop is not significant (exact
  McNemar test, :data:`SIGNIFICANCE`); a dropped crop is checked again as a ``mild-crop``. Crops are checked
  with the probe above on one seeded random crop per image; flips with a *side* probe, fit on the left halves
  of the training images and scored on the left halves of the mirrored validation images
  (:data:`zoo_core.data.augment.CHECKS` says why). A mirrored arrow changes its label, a mirrored cat does not: the
  check finds which on the user's own data. Each view costs one backbone pass over at most
  :data:`CHECK_IMAGES` validation images (the side probe one over as many training images too), cached like
  any other features.

Everything here runs under a forked RNG, so a cache hit or miss does not change the run's random numbers;
a resumed run reads its probe and its augmentation decision back from ``config.json``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from .. import cache
from ..cache import FeatureSet
from ..data import augment as zaug
from ..headfit.split import stratified_subsample
from ..stats import mcnemar_exact
from . import cached, report
from .setup import RunState

CHECK_IMAGES = 250
"""The augmentation check sees at most this many training (side probe) and validation images (a stratified,
fixed subsample), so its cost stays small next to fine-tuning on large data. 250 rather than 500 took LP-FT
on 1,346 digits at 224 px from 1.49x to 1.32x the old fine-tune's wall time with the same verdicts (crop
-19 points, p=1e-11; flip -52 points, p=4e-31)."""

SIGNIFICANCE = 0.05
"""An augmentation is dropped only when its drop is also significant at this level (exact McNemar)."""


def with_probe(state: RunState) -> RunState:
    """``state`` with the probe fitted (``state.probe``), its head in the model when ``head_init="probe"``,
    and ``state.augment`` narrowed to what the check kept when the policy is ``auto``; ``state`` itself when
    the run needs no probe (``state.shape.probe``)."""
    if not state.shape.probe:
        return state
    if state.resume:
        return _restored(state)
    with _own_rng(state.device):
        fx = cached.extract(state, ("train", "val"), state.ctx, state.quiet)
        head = copy.deepcopy(state.model.get_submodule(state.head))
        fit, row = cached.converge_head(state, fx, head)
        row = {**row, "epoch": 0}
        record: dict[str, Any] = {"row": row, "head_fit": fit.config(),
                                  "features_from_cache": fx["train"].from_cache and fx["val"].from_cache}
        policy = state.augment
        if state.shape.augment_auto:
            check = check_augmentations(state, head, fx, policy)
            check = state.ctx.broadcast_object(check)  # one decision for every rank
            policy = tuple(name for name in zaug.AUGMENTATIONS if name in check and check[name]["kept"])
            record["augment_check"] = check
    if state.shape.from_probe:
        state.model.get_submodule(state.head).load_state_dict(head.state_dict())
    report.probe_lines(state, record, policy)
    return dataclasses.replace(state, probe=record, augment=policy)


def check_augmentations(state: RunState, head: torch.nn.Module, fx: dict[str, Any],
                        names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per augmentation in ``names`` (:data:`zoo_core.data.augment.CHECKS`): the validation top-1 of its probe on
    the probe's view and on the checked view, the drop, the exact McNemar p of the paired difference, and
    whether the augmentation is kept. ``head`` is the probe on plain features ``fx`` (train and val)."""
    rows = {s: stratified_subsample(torch.arange(len(fx[s])), fx[s].labels, CHECK_IMAGES, zaug.VIEW_SEED)
            for s in ("train", "val")}  # at most CHECK_IMAGES of each split, every class in proportion
    features: dict[tuple[str, str], Any] = {}

    def view(split: str, name: str) -> Any:
        if (split, name) not in features:
            if name == "plain":
                f = fx[split]
                features[split, name] = FeatureSet(f.features[rows[split]], f.labels[rows[split]], f.from_cache, f.path)
            else:
                features[split, name] = cache.split_features(
                    state.cfg, state.split, split, state.model, state.adapter, state.data_cfg, state.device,
                    state.ctx, quiet=state.quiet, view=name,
                    rows=None if len(rows[split]) == len(fx[split]) else rows[split].tolist())
        return features[split, name]

    probes = {"plain": head}
    out = {}
    todo = list(names)
    while todo:
        name = todo.pop(0)
        probe_view, checked = zaug.CHECKS[name]
        if probe_view not in probes:  # e.g. the side probe of the flip check, fit like the plain one
            probes[probe_view] = copy.deepcopy(head)
            cached.converge_head(state, {"train": view("train", probe_view), "val": view("val", probe_view)},
                                 probes[probe_view])
        base = cached.evaluate_features(state, probes[probe_view], view("val", probe_view), want_preds=True)
        ev = cached.evaluate_features(state, probes[probe_view], view("val", checked), want_preds=True)
        base_ok, ok = (base["preds"] == base["targets"]).tolist(), (ev["preds"] == ev["targets"]).tolist()
        drop = round(base["val_acc"] - ev["val_acc"], 6)
        p = mcnemar_exact(base_ok, ok)["p_value"]
        tolerance = zaug.CHECK_TOLERANCE[name]
        kept = drop <= tolerance or p >= SIGNIFICANCE
        change = f"{-100 * drop:+.1f} points"
        why = (f"{change}, within the {100 * tolerance:g}-point tolerance" if drop <= tolerance else
               f"{change}, beyond {100 * tolerance:g} but not significant (p={p:.2g})" if kept else
               f"{change}, beyond {100 * tolerance:g} (p={p:.2g})")
        out[name] = {"probe_view": probe_view, "checked_view": checked, "probe_top1": round(base["val_acc"], 6),
                     "view_top1": round(ev["val_acc"], 6), "drop": drop, "tolerance": tolerance,
                     "p": p, "kept": kept, "why": why, "images": len(ok)}
        if not kept and name in zaug.FALLBACK:  # a milder version of what was dropped
            todo.insert(0, zaug.FALLBACK[name])
    return out


def _restored(state: RunState) -> RunState:
    """A resumed run: the probe record and the augmentation decision from its ``config.json`` (the head
    itself is in ``last.pt``)."""
    saved = state.run.read_json("config.json")
    policy = tuple(saved.get("augment") or ()) if state.shape.augment_auto else state.augment
    return dataclasses.replace(state, probe=saved.get("probe"), augment=policy)


def _own_rng(device: torch.device) -> Any:
    """Torch's RNG (CPU, and the run's GPU) forked for the duration: the probe never shifts the run's draws."""
    return torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])
