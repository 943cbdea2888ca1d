"""Successive halving (``compare(..., select=K)``, ``zoo compare --select K``): many candidates, few trainings.

1. **Rank** every candidate with :func:`zoo_core.rank` — frozen features on the training split (or a
   ``budget`` subsample) scored without training. On the full split the features land in the cache under
   the key a feature-extraction run reads, so stage 2 does not run those backbones again.
2. **Feature extraction** (the converged head) on the best ``max(K, ceil(keep × N))`` of the ranking.
3. **Fine-tune** (the plan's other strategies; ``finetune`` when only feature extraction was asked) the K
   best feature-extraction entries by validation top-1.

Candidates the ranking drops are never trained; the leaderboard lists what was trained, and says in a note
(and ``leaderboard.json`` under ``"selection"``) what was ranked, kept and fine-tuned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ZooError
from ..ranking import RANK_OPTIONS, SCORES, rank
from .leaderboard import Entry

FEATURE_EXTRACTION = "feature-extraction"
DEFAULT_KEEP = 0.5  # the fraction of the ranked candidates that gets a feature-extraction entry


@dataclass(frozen=True)
class Selection:
    """How a compare call narrows its candidates (see the module docstring)."""

    k: int  # backbones fine-tuned at the end
    keep: float = DEFAULT_KEEP
    budget: int | None = None  # rank on a stratified subsample of about this many training images
    score: str = "probe"  # what orders the ranking

    def kept(self, n: int) -> int:
        """How many of ``n`` ranked candidates get a feature-extraction entry."""
        return min(n, max(self.k, math.ceil(self.keep * n)))


def make_selection(select: int | None, keep: float, budget: int | None, score: str) -> Selection | None:
    """Check the options of successive halving (None: no selection); fails before any work."""
    if select is None:
        given = [f for f, v, default in (("--select-keep", keep, DEFAULT_KEEP), ("--select-budget", budget, None),
                                         ("--select-score", score, "probe")) if v != default]
        if given:
            raise ZooError(f"{', '.join(given)} only apply with --select K (successive halving); add --select "
                           "or leave them out")
        return None
    if not isinstance(select, int) or isinstance(select, bool) or select < 1:
        raise ZooError(f"--select must be a positive integer (backbones to fine-tune), got {select!r}")
    if not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ZooError(f"--select-keep must be a fraction in (0, 1], got {keep!r}")
    if budget is not None and (not isinstance(budget, int) or budget < 2):
        raise ZooError(f"--select-budget must be an integer of at least 2 (training images), got {budget!r}")
    if score not in SCORES:
        raise ZooError(f"unknown score {score!r}; choose one of {', '.join(SCORES)} (--select-score)")
    return Selection(select, float(keep), budget, score)


def later_strategies(strategies: tuple[str, ...]) -> tuple[str, ...]:
    """The strategies of stage 3: every asked strategy but feature extraction, or ``finetune``."""
    return tuple(s for s in strategies if s != FEATURE_EXTRACTION) or ("finetune",)


def _best_by_top1(entries: list[Entry], k: int) -> list[str]:
    done = sorted((e for e in entries if e.finished and e.val_acc is not None),
                  key=lambda e: (-e.val_acc, e.val_loss if e.val_loss is not None else math.inf))
    return [e.backbone for e in done[:k]]


def successive_halving(plan: Any, split: Any, out: Path, sel: Selection,
                       run_entries: Callable[[list[tuple[str, str]]], list[Entry]], *, fallback_random: bool,
                       progress: bool, say: Callable[[str], None],
                       executor: Any = "local") -> tuple[list[Entry], dict[str, Any]]:
    """Rank ``plan.backbones``, train feature extraction on the kept ones and fine-tune the best ``sel.k``;
    each stage's entries (``run_entries``) and the ranking (``executor``) fan out together.

    :returns: the trained entries (and the ranking's failures as failed entries), and the record of the
        selection for the leaderboard.
    """
    options = {k: getattr(plan.base, k) for k in RANK_OPTIONS}
    ranking = rank(list(plan.backbones), split, out_dir=out / "rank", budget=sel.budget, score=sel.score,
                   fallback_random=fallback_random, max_entries=None, progress=progress, executor=executor,
                   **options)
    ranked = [e.backbone for e in ranking.entries if e.ok]
    kept = ranked[:sel.kept(len(ranked))]
    say(f"zoo compare: --select {sel.k}: ranked {len(plan.backbones)} backbone(s) by {sel.score} "
        f"({out / 'rank' / 'ranking.md'}); feature extraction on the best {len(kept)}: {', '.join(kept)}")
    entries = [Entry(e.backbone, FEATURE_EXTRACTION, status="failed", error=f"ranking failed: {e.error}")
               for e in ranking.entries if not e.ok]
    fe = run_entries([(b, FEATURE_EXTRACTION) for b in kept])
    best = _best_by_top1(fe, sel.k)
    later = later_strategies(plan.strategies)
    say(f"zoo compare: --select {sel.k}: {', '.join(later)} on the best {len(best)} by top-1: {', '.join(best)}")
    tuned = run_entries([(b, s) for b in best for s in later])
    record = {"k": sel.k, "keep": sel.keep, "score": sel.score, "budget": sel.budget,
              "ranked": [e.backbone for e in ranking.entries], "feature_extraction": kept,
              "fine_tuned": best, "strategies": list(later), "ranking": str(out / "rank" / "ranking.json")}
    return entries + fe + tuned, record
