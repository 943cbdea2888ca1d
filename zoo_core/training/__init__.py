"""The shared trainer: any registered backbone on a target dataset, with any strategy.

``train(backbone, data, strategy=..., epochs=...)`` runs ``cfg → build_run → RunState → (end-to-end
path | cached-feature path) → report → TrainResult``; ``docs/ARCHITECTURE.md`` (Training) maps the rooms:

- :mod:`.options` — one home per option: what each :class:`TrainConfig` field carries (help, rule, policies);
- :mod:`.config` — :class:`TrainConfig`, :class:`TrainResult`, option checks, run names;
- :mod:`.resume` — the config of a resumed run (:func:`~.resume.resumed_config`);
- :mod:`.shape` — :class:`RunShape` (:func:`run_shape`): cached path or not, LP-FT probe, shared pixels,
  decided once from the config;
- :mod:`.setup` — :class:`RunState` and :func:`build_run` (data, model, device, precision, choices);
- :mod:`.inputs` — data config, evaluation datasets, :class:`EpochSampler`;
- :mod:`.lrfind` — the LR range test (:func:`lr_find`, ``--lr auto``);
- :mod:`.loop` — the epoch loop and its policy; :mod:`.steps` — one epoch, one evaluation;
- :mod:`.endtoend` / :mod:`.cached` — the two paths; :mod:`.checkpoint` — best.pt, last.pt, resume;
- :mod:`.report` — log lines, final evaluation files, plots; :mod:`.fit` — :func:`train` itself.

Policy lives in :mod:`zoo_core.strategies`; files in :mod:`zoo_core.rundir`.
"""

from __future__ import annotations

from .config import TrainConfig, TrainResult
from .fit import train
from .inputs import EpochSampler, data_config_for
from .lrfind import LRFindResult, lr_find, suggest_lr
from .setup import RunState, build_run
from .shape import RunShape, run_shape

__all__ = ["EpochSampler", "LRFindResult", "RunShape", "RunState", "TrainConfig", "TrainResult", "build_run",
           "data_config_for", "lr_find", "run_shape", "suggest_lr", "train"]
