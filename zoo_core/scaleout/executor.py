"""Executors: who runs the entries of a ``compare`` or ``rank`` call — this process, one after another
(:class:`LocalExecutor`), or Ray tasks on every GPU of a node or a cluster (:class:`~.ray_backend.RayExecutor`).

Both run the same :class:`Job`: a picklable object whose :meth:`Job.run` is the library call a serial
run makes for one entry. The driver keeps everything else (the leaderboard, the ranking, the reports).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from tqdm.auto import tqdm

Say = Callable[[str], None]


class Job(Protocol):
    """One kind of entry (a compare entry, a rank candidate): run on a worker, gathered on the driver."""

    what: str  # the command, for progress lines ("zoo compare")
    bar: bool  # the local executor shows a bar of entries (rank) or leaves it to each entry (compare)

    def label(self, item: Any) -> str:
        """How the entry is named in progress lines."""

    def log_path(self, item: Any) -> Path:
        """Where a worker writes the entry's log (its run directory)."""

    def run(self, item: Any, say: Say | None = None) -> Any:
        """The entry's result; ``say`` is given on a worker (lines into its log), None in the driver."""

    def lost(self, item: Any, reason: str) -> Any:
        """The failed result of an entry whose worker died (OOM, lost node, ``kill -9``)."""

    def finished(self, item: Any, result: Any, done: int, total: int) -> None:
        """On the driver, after each entry (progress lines, bookkeeping)."""

    def failed(self, result: Any) -> bool:
        """Whether ``result`` is a failure (for the progress bar)."""


class Executor:
    """Runs a :class:`Job` over its entries; a context manager (``close`` frees what it started)."""

    name = "local"

    def prepare(self, out: Path, backbones: Sequence[str], data: Any) -> None:
        """Checks before the first entry (that workers share ``out`` and the cache, have the plugins)."""

    def map(self, job: Job, items: Sequence[Any]) -> list[Any]:
        """Every item's result, in the order of ``items``."""
        raise NotImplementedError

    def close(self) -> None:
        """Free what this executor started."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """Every entry in this process, one after another, on this process's device."""

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def map(self, job: Job, items: Sequence[Any]) -> list[Any]:
        """Run the entries in order; with ``job.bar``, one bar of entries on stderr."""
        results = []
        with tqdm(total=len(items), desc=job.what, unit="entry", disable=not (self.progress and job.bar),
                  dynamic_ncols=True, file=sys.stderr) as bar:
            for i, item in enumerate(items, 1):
                bar.set_postfix_str(job.label(item))
                results.append(job.run(item))
                bar.update(1)
                job.finished(item, results[-1], i, len(items))
        return results
