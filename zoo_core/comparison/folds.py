"""``compare --folds K``: how much a feature-extraction entry's top-1 moves with the choice of validation images.

Same features, different splits. For each entry that trained its head on cached features
(:func:`zoo_core.training.run_shape`'s ``cached``: a frozen backbone without augmentation), the train and
validation features are read back from the feature cache (:func:`zoo_core.cache.split_features`, with the
entry's own frozen backbone from its ``best.pt``; a cleared cache is rebuilt), pooled, and dealt into ``K`` stratified folds
(:func:`zoo_core.headfit.stratified_folds`, seeded with the entry's seed). Each fold in turn is held out
while the converged head fit (:func:`zoo_core.headfit.fit_linear_head`, exactly as the run fits it: ``C``
chosen on an inner split, then a refit) learns from the others; its top-1 on the held-out fold is one
value. The leaderboard reports their mean ± standard deviation (``ddof=1``) and records every value.

That costs ``K`` head fits on features already in memory — seconds — and no backbone pass. The
single-split top-1 stays the leaderboard's main number: it is what the entry's checkpoint does, and the
number the other strategies (which train the backbone, so cannot be refolded cheaply) are compared on.
Entries merged from earlier calls (``merge=True``) are listed without folds.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from .. import cache, headfit
from ..backbones import registry
from ..errors import ZooError
from ..inference import load
from ..training import TrainConfig, data_config_for, run_shape
from .leaderboard import Entry


def check_folds(folds: int | None, n_images: int | None = None) -> None:
    """Refuse a fold count that is not a whole number of at least 2, or more than the ``n_images``."""
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
        raise ZooError(f"folds must be a whole number of at least 2 (--folds K), got {folds!r}")
    if folds is not None and n_images is not None and folds > n_images:
        raise ZooError(f"--folds {folds} is more than the {n_images} images of the data; use fewer folds")


def refoldable(cfg: TrainConfig) -> bool:
    """True when an entry of ``cfg`` trains its head on cached features (so its folds cost only head fits)."""
    return run_shape(cfg).cached


def fold_top1(x: torch.Tensor, y: torch.Tensor, num_classes: int, k: int, *, seed: int,
              label_smoothing: float = 0.0) -> list[float]:
    """Top-1 on each of ``k`` stratified folds of the features ``x`` [N, D] / labels ``y`` [N], the converged
    head fit learning from the other folds each time."""
    scores = []
    parts = headfit.stratified_folds(y, k, seed)
    for i, held in enumerate(parts):
        if held.numel() == 0:
            raise ZooError(f"folds={k}: fold {i + 1} would be empty with only {len(y)} images; use fewer folds")
        train = torch.cat([p for j, p in enumerate(parts) if j != i]).sort().values
        fit = headfit.fit_linear_head(x[train], y[train], num_classes, seed=seed, label_smoothing=label_smoothing)
        logits = x[held].float() @ fit.weight.T.cpu() + fit.bias.cpu()
        scores.append(float((logits.argmax(1) == y[held]).double().mean()))
    return scores


def entry_features(cfg: TrainConfig, split: Any, run_dir: str, device: torch.device,
                   quiet: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation features of a finished entry, pooled: ``(x [N, D], y [N])``."""
    model = load(run_dir, device=device).model
    adapter, _ = registry.get_adapter(cfg.backbone)
    data_cfg = data_config_for(adapter, cfg)
    sets = [cache.split_features(cfg, split, name, model, adapter, data_cfg, device, quiet=quiet)
            for name in ("train", "val")]
    return torch.cat([s.features for s in sets]).float(), torch.cat([s.labels for s in sets])


def add_folds(entry: Entry, split: Any, k: int, device: torch.device, quiet: bool = True) -> bool:
    """Fill ``entry``'s fold fields (``folds_k``, ``folds_top1``, ``folds_mean``, ``folds_std``); False,
    leaving them empty, for an entry that is not refoldable or was not run by this compare call."""
    cfg = entry.config
    if not entry.finished or cfg is None or not refoldable(cfg):
        return False
    x, y = entry_features(cfg, split, entry.run_dir, device, quiet)
    scores = fold_top1(x, y, len(split.classes), k, seed=cfg.seed, label_smoothing=cfg.label_smoothing)
    entry.folds_k, entry.folds_top1 = k, scores
    entry.folds_mean, entry.folds_std = statistics.fmean(scores), statistics.stdev(scores)
    lacking = folds_lacking(y, k, cfg.seed, split.classes)
    if lacking:
        entry.add_note(lacking)
    return True


def folds_lacking(y: torch.Tensor, k: int, seed: int, classes: list[str]) -> str | None:
    """What to say when some of the ``k`` stratified folds of labels ``y`` hold no image of a class (a class
    with fewer images than folds): those folds' top-1 never tests that class. None when every fold has all."""
    parts = headfit.stratified_folds(y, k, seed)
    present = sorted(set(y.tolist()))
    short = [(i + 1, [classes[c] for c in present if not bool((y[held] == c).any())]) for i, held in enumerate(parts)]
    short = [(i, missing) for i, missing in short if missing]
    if not short:
        return None
    names = sorted({c for _, missing in short for c in missing})
    return (f"{len(short)} of {k} folds hold no image of class(es) {', '.join(names[:5])}"
            f"{' …' if len(names) > 5 else ''} (fewer images than folds): their folds top-1 never tests them")
