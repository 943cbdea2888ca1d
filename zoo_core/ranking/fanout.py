"""The rank candidate as an executor's :class:`~zoo_core.scaleout.Job`: one backbone's features and scores,
in this process or on a Ray worker (its output then in ``<out>/logs/<backbone>.log``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..util import atomic_write_text
from .results import RankEntry

Say = Callable[[str], None]


@dataclass
class RankJob:
    """Ranks candidates on ``split``: ``rank_one(config(backbone), split, folds, fallback_random, out, say)``."""

    rank_one: Callable[..., RankEntry]  # the ranking of one candidate (zoo_core.ranking.api)
    config: Callable[[str], Any]  # the candidate's TrainConfig
    split: Any
    folds: int
    fallback_random: bool
    out: Path
    say: Say
    what: str = "zoo rank"
    bar: bool = True

    def label(self, item: str) -> str:
        """The backbone's name."""
        return item

    def log_path(self, item: str) -> Path:
        """``<out>/logs/<backbone>.log``."""
        return self.out / "logs" / f"{item.replace('/', '_')}.log"

    def run(self, item: str, say: Say | None = None) -> RankEntry:
        """The candidate's entry (an error is a failed entry, never raised)."""
        return self.rank_one(self.config(item), self.split, self.folds, self.fallback_random, self.out,
                             say or self.say)

    def lost(self, item: str, reason: str) -> RankEntry:
        """A failed entry whose ``errors/<backbone>.txt`` gives the reason its worker gave no result."""
        entry = RankEntry(item, status="failed", error=f"worker lost: {reason}")
        atomic_write_text(self.out / "errors" / f"{item.replace('/', '_')}.txt", entry.error + "\n")
        self.say(f"zoo rank: {item}: FAILED — {entry.error}")
        return entry

    def finished(self, item: str, result: RankEntry, done: int, total: int) -> None:
        """The candidate's scores on the driver's progress lines."""
        if result.ok:
            self.say(f"zoo rank: [{done}/{total}] {item}: LogME {result.logme:.4f} ± {result.logme_std:.4f}, probe "
                     f"{result.probe_acc:.4f} ± {result.probe_std:.4f} ({result.seconds:.1f}s)")

    def failed(self, result: RankEntry) -> bool:
        """Whether the candidate failed."""
        return not result.ok
