"""What one compare call will run, decided before any data is touched: :func:`make_plan` → :class:`Plan`.

Backbone names, glob patterns and a family expand into a de-duplicated list (:func:`zoo_core.backbones.registry.expand_backbones`),
strategies into canonical names; every option is checked (unknown training options, options compare
sets itself, the entry limit, the fold count), and one base :class:`~zoo_core.training.TrainConfig`
holds what every entry shares. The plan's ``entries`` are the backbone × strategy pairs in run order: a
step that narrows them before training (a cheap pre-selection) takes a Plan and returns a smaller one
(``dataclasses.replace(plan, backbones=...)``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Sequence

from ..backbones.registry import expand_backbones
from ..errors import ZooError
from ..runtime import pick_device
from ..strategies import get_strategy
from ..training import TrainConfig
from ..training.config import resolve_config
from .folds import check_folds
from .select import FEATURE_EXTRACTION, Selection, later_strategies

NOT_PER_ENTRY = ("backbone", "data", "run_name", "out_dir", "progress")  # compare sets these itself


@dataclass(frozen=True)
class Plan:
    """The entries of one compare call and the configuration they share."""

    backbones: tuple[str, ...]
    strategies: tuple[str, ...]
    base: TrainConfig  # every entry's config but its backbone, strategy, weights and run directory
    folds: int | None = None
    select: Selection | None = None  # successive halving: rank, keep a fraction, fine-tune the best K

    @property
    def entries(self) -> list[tuple[str, str]]:
        """``(backbone, strategy)`` pairs in run order: each backbone's strategies together."""
        return [(b, s) for b in self.backbones for s in self.strategies]


def strategy_names(strategies: Sequence[str] | str | None, strategy: str | None) -> list[str]:
    """Canonical, de-duplicated strategy names; unknown ones fail before any training."""
    if strategies is not None and strategy is not None:
        raise ZooError("pass either strategies=[...] or strategy=..., not both")
    items = [strategies] if isinstance(strategies, str) else list(strategies or [])
    if strategy is not None:
        items = [strategy]
    names = [get_strategy(s).name for s in items or ["feature-extraction"]]
    return list(dict.fromkeys(names))


def _check_overrides(overrides: dict[str, Any]) -> None:
    unknown = set(overrides) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ZooError(f"unknown training option(s) for compare: {', '.join(sorted(unknown))}")
    fixed = sorted(set(overrides) & set(NOT_PER_ENTRY))
    if fixed:
        raise ZooError(f"compare sets {', '.join(fixed)} itself for every entry; pass the backbones, data and "
                       "out_dir as compare's own arguments")


def make_plan(backbones: Sequence[str] | str | None, data: Any, *, strategies: Sequence[str] | str | None,
              family: str | None, max_entries: int | None, folds: int | None,
              overrides: dict[str, Any], select: Selection | None = None) -> Plan:
    """Check compare's arguments and expand them into a :class:`Plan`; nothing is read or written."""
    _check_overrides(overrides)
    overrides = dict(overrides)
    names = strategy_names(strategies, overrides.pop("strategy", None))
    found = expand_backbones(backbones, family)
    check_folds(folds)
    if select is not None:  # stage 2 trains feature extraction on a fraction, stage 3 the rest on K backbones
        names = [FEATURE_EXTRACTION, *later_strategies(tuple(names))]
        n_entries = select.kept(len(found)) + min(select.k, len(found)) * (len(names) - 1)
    else:
        n_entries = len(found) * len(names)
    if max_entries is not None and n_entries > max_entries:
        what = ", ".join(found[:5]) + (", …" if len(found) > 5 else "")
        raise ZooError(f"compare would run {n_entries:,} entries ({len(found):,} backbones × {len(names)} "
                       f"strategies: {what}), more than max_entries={max_entries}; narrow it with a pattern "
                       "(e.g. 'timm/resnet*') or raise the limit (--max-entries N, or 0 for no limit)")
    base = TrainConfig(**{"share_decoding": True, **overrides})
    base.data = os.fspath(data) if isinstance(data, (str, os.PathLike)) else ""
    for strategy in names:  # a bad option fails here, once, before any data or model is loaded
        resolve_config(replace(base, strategy=strategy))
    pick_device(base.device)  # so does a device this machine does not have
    return Plan(tuple(found), tuple(names), base, folds, select)
