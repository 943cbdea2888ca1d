"""``rank``: score many backbones on the user's images without fine-tuning any of them.

For each candidate: its frozen features on the training split (or a ``budget`` subsample) through the
feature cache (:mod:`.features`), then LogME and the k-fold linear probe on them (:mod:`.scores`). A
failing candidate is recorded with its error and the others go on. The result is a :class:`Ranking`,
written into ``out_dir`` by :mod:`.outputs`.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from .. import data as zdata
from ..backbones.registry import expand_backbones
from ..errors import ZooError
from ..runtime import pick_device, resolve_precision
from ..scaleout import Executor, use_executor
from ..stats import majority_baseline
from ..training.config import data_options
from ..util import atomic_write_text, check_output_folder
from .fanout import RankJob
from .features import RANK_OPTIONS, candidate_config, extract, predecode, subsample
from .outputs import write_outputs
from .results import RankEntry, Ranking, order
from .scores import DEFAULT_SCORE, SCORES, score_features


def _check(score: str, folds: int, options: dict[str, Any]) -> None:
    """Fail on an unknown score, a bad fold count or an option rank does not take, before any work."""
    if score not in SCORES:
        raise ZooError(f"unknown score {score!r}; choose one of {', '.join(SCORES)} (--score)")
    if not isinstance(folds, int) or folds < 2:
        raise ZooError(f"folds must be an integer of at least 2, got {folds!r} (--folds)")
    unknown = sorted(set(options) - set(RANK_OPTIONS))
    if unknown:
        raise ZooError(f"unknown option(s) for rank: {', '.join(unknown)}; it takes {', '.join(RANK_OPTIONS)}")
    resolve_precision(options.get("precision", "auto"), pick_device(options.get("device", "auto")))


def _names(backbones: Sequence[str] | str | None, family: str | None, max_entries: int | None) -> list[str]:
    """The candidates (names, patterns, ``family``), at most ``max_entries`` of them."""
    if not backbones and not family:
        raise ZooError("no backbones to rank: name some, use a pattern like 'timm/resnet*', or --family")
    names = expand_backbones(backbones, family)
    if max_entries is not None and len(names) > max_entries:
        what = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
        raise ZooError(f"rank would score {len(names):,} backbones ({what}), more than max_entries={max_entries}; "
                       "narrow it with a pattern (e.g. 'timm/resnet*') or raise the limit (--max-entries N, or 0 "
                       "for no limit)")
    return names


def rank(backbones: Sequence[str] | str | None, data: Any, *, family: str | None = None, budget: int | None = None,
         folds: int = 5, score: str = DEFAULT_SCORE, out_dir: str | os.PathLike = "zoo-rank",
         fallback_random: bool = False, max_entries: int | None = 256, progress: bool = True,
         executor: str | Executor = "local", **options: Any) -> Ranking:
    """Score every backbone's frozen features on ``data`` (no fine-tuning) and write the ranking into ``out_dir``.

    :param backbones: names and glob patterns (``"timm/resnet*"``), as for ``compare``; ``family`` selects or filters.
    :param budget: score a stratified subsample of about this many training images instead of the whole
        training split (much faster on large data; its features are cached under their own key, so only a
        full-split ranking is reused by a later ``compare``).
    :param folds: folds of the linear-probe cross-validation (and of both scores' spreads).
    :param score: what orders the ranking: ``"logme"`` or ``"probe"`` (both are always computed).
    :param fallback_random: score a backbone whose pretrained weights are unavailable from random init
        (marked RANDOM INIT) instead of recording a failure.
    :param max_entries: refuse (before touching any data) more backbones than this; None lifts the limit.
    :param executor: ``"local"`` (one candidate after another) or ``"ray"`` (each candidate a Ray task,
        :mod:`zoo_core.scaleout`); the same ranking either way.
    :param options: the :class:`~zoo_core.TrainConfig` fields that decide the features (:data:`RANK_OPTIONS`:
        ``weights``, ``image_size``, ``batch_size``, ``device``, ``precision``, ``seed``, ``val_fraction``, …);
        equal values give the features of a feature-extraction run.
    """
    _check(score, folds, options)
    check_output_folder(out_dir, "--out")  # before any data is read
    names = _names(backbones, family, max_entries)
    base = candidate_config(names[0], options, progress)
    split = zdata.load_data(data, val_fraction=base.val_fraction, seed=base.seed, download=base.download,
                            data_root=base.data_root, progress=progress, **data_options(base))
    ranked_on = subsample(split, budget, base.seed)
    n = len(ranked_on.train)  # type: ignore[arg-type]
    if n < 2 * folds:
        raise ZooError(f"{n} training images are too few for a {folds}-fold probe; need at least {2 * folds} "
                       "(more images, a larger --budget, or fewer --folds)")
    what = f"{n} training images" + (f" (stratified subsample of {len(split.train)})" if ranked_on is not split
                                     else "")  # type: ignore[arg-type]
    summary = f"{what}, {len(split.classes)} classes, {folds}-fold probe"
    out = Path(out_dir)
    say = _say(progress)
    say(f"zoo rank: {len(names)} backbone(s) on {what} of {split.source}")
    with use_executor(executor, progress) as ex:
        ex.prepare(out, names, data)
        config = partial(candidate_config, options=options, progress=progress)
        entries = ex.map(RankJob(_rank_one, config, ranked_on, folds, fallback_random, out, say), names)
    ranking = Ranking(order(entries, score), out, score, folds, split.source, summary, budget,
                      majority_baseline(zdata.known_labels(ranked_on.train)))
    write_outputs(ranking)
    say("\n" + ranking.table())
    say(f"\nzoo rank: ranking and plot in {out}/ (ranking.md, .csv, .json, score_vs_speed.png)")
    return ranking


def _say(progress: bool) -> Callable[[str], None]:
    """Log lines on stderr that leave the progress bars intact (nothing without ``progress``)."""
    return (lambda msg: tqdm.write(msg, file=sys.stderr)) if progress else (lambda msg: None)


def _rank_one(cfg: Any, split: zdata.DataSplit, folds: int, fallback_random: bool, out: Path,
              say: Callable[[str], None]) -> RankEntry:
    """Features, then both scores, of one backbone; any error is recorded in the entry."""
    entry = RankEntry(cfg.backbone)
    try:
        predecode(cfg, split)
        t0 = time.perf_counter()
        ex = extract(cfg, split, fallback_random=fallback_random, say=say)
        fs = ex.features
        sc = score_features(fs.features, fs.labels, len(split.classes), folds=folds, seed=cfg.seed)
    except (Exception, torch.cuda.OutOfMemoryError) as exc:  # noqa: BLE001 - recorded, the others go on
        _fail(entry, exc, out, say)
        return entry
    entry.status, entry.weights = "ok", ex.weights
    entry.logme, entry.logme_std, entry.probe_acc, entry.probe_std = sc.logme, sc.logme_std, sc.probe_acc, sc.probe_std
    entry.probe_folds = [round(a, 6) for a in sc.probe_folds]
    entry.feature_dim, entry.images, entry.from_cache = fs.dim, len(fs), fs.from_cache
    entry.extract_images_per_s = ex.images_per_s
    entry.extract_seconds, entry.score_seconds = round(ex.seconds, 3), round(sc.seconds, 3)
    entry.seconds = round(time.perf_counter() - t0, 3)
    return entry


def _fail(entry: RankEntry, exc: BaseException, out: Path, say: Callable[[str], None]) -> None:
    """Mark ``entry`` failed with the error's first line; its traceback goes to ``out/errors/<backbone>.txt``."""
    entry.status = "failed"
    entry.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    say(f"zoo rank: {entry.backbone}: FAILED — {entry.error}")
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    atomic_write_text(out / "errors" / f"{entry.backbone.replace('/', '_')}.txt", tb)
