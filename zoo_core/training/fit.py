"""``train()``: one run, from a config to a :class:`~zoo_core.training.config.TrainResult`.

A run reads top to bottom in :func:`run`: build the run (:func:`~zoo_core.training.setup.build_run`, then
the linear probe a fine-tuning starts from and its augmentation check (:mod:`~zoo_core.training.probe`),
then ``--lr auto``, then ``--strategy auto``'s trials (:mod:`~zoo_core.training.surgical`)), train through one of the two paths (end to end, or the head on cached features), reload
the best weights, and report.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from . import cached, endtoend, report
from .checkpoint import restore_best
from .config import TrainConfig, TrainResult, new_run_config, run_directory
from .lrfind import with_auto_lr
from .probe import with_probe
from .resume import resumed_config
from .setup import build_run, check_options, join_processes
from .surgical import with_choice


def train(backbone: str | None = None, data: Any = None, *, config: TrainConfig | None = None,
          resume: str | Path | None = None, **overrides: Any) -> TrainResult:
    """Train ``backbone`` on ``data`` (folder, built-in name, Dataset or DataSplit).

    The seed recipe — pretrained ResNet-18, frozen, new 2-class head — is::

        result = zoo_core.train("resnet18", "path/to/cats_vs_dogs", strategy="feature-extraction")

    Keyword ``overrides`` set any :class:`TrainConfig` field. ``resume=RUN_DIR`` continues an
    interrupted run from its ``last.pt`` with the saved config; only the options in
    :data:`~zoo_core.training.config.RESUMABLE` may change then (e.g. more ``epochs``), others are refused.
    """
    cfg, run_path, resumes = _plan(backbone, data, config, resume, overrides)
    return run(cfg, data if data is not None else cfg.data, run_path=run_path, resume=resumes is not None,
               resumes=resumes or ())


def check_train(backbone: str | None = None, data: Any = None, *, config: TrainConfig | None = None,
                resume: str | Path | None = None, **overrides: Any) -> None:
    """Raise the one-line error :func:`train` with these arguments would raise about its options (or its
    resume), doing no work: ``zoo train --nproc N`` checks once before it launches N processes."""
    cfg, _, _ = _plan(backbone, data, config, resume, overrides)
    check_options(cfg)


def _plan(backbone: str | None, data: Any, config: TrainConfig | None, resume: str | Path | None,
          overrides: dict[str, Any]) -> tuple[TrainConfig, Path, tuple[dict[str, Any], ...] | None]:
    """(config, run directory, the resume log or None for a new run) of a :func:`train` call."""
    if resume is not None:
        plan = resumed_config(Path(resume), overrides, backbone=backbone, data=data)
        return plan.config, Path(resume), plan.resumes
    cfg = new_run_config(backbone, data, config, overrides)
    return cfg, run_directory(cfg), None


def run(cfg: TrainConfig, data: Any, *, run_path: Path, resume: bool = False,
        resumes: tuple[dict[str, Any], ...] = ()) -> TrainResult:
    """The run of ``cfg`` on ``data`` in ``run_path`` (continuing its ``last.pt`` when ``resume``; ``resumes``
    is the log of its resumes for ``config.json``)."""
    ctx = join_processes(cfg)
    try:
        state = build_run(cfg, data, ctx=ctx, run_path=run_path, resume=resume)
        state = dataclasses.replace(state, resumes=resumes)
        report.start(state)
        state = with_choice(with_auto_lr(with_probe(state)))
        path = cached if state.shape.cached else endtoend
        t_start = time.perf_counter()
        trained = path.fit(state)
        train_seconds = time.perf_counter() - t_start
        restore_best(state)
        return report.finish(state, trained, path.final_predictions(state), train_seconds)
    finally:
        ctx.close()
