"""The compare entry as an executor's :class:`~zoo_core.scaleout.Job`: one backbone × strategy, run by the
call's :class:`~.run.EntryRunner` in this process or, on a Ray worker, by a copy of it with that worker's
device, log and session."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..runtime import pick_device
from ..util import atomic_write_text
from . import markers
from .leaderboard import Entry

Item = tuple[str, str]  # (backbone, strategy)
LOG = "zoo.log"  # a worker's output for the entry, in its run directory


class CompareJob:
    """Runs compare entries with ``runner`` (an :class:`~.run.EntryRunner`)."""

    what, bar = "zoo compare", False

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def label(self, item: Item) -> str:
        """``backbone [strategy]``."""
        return f"{item[0]} [{item[1]}]"

    def log_path(self, item: Item) -> Path:
        """``<run dir>/zoo.log``."""
        return self.runner.entry_dir(*item) / LOG

    def run(self, item: Item, say: Callable[[str], None] | None = None) -> Entry:
        """The entry: reused, trained, or failed (an error in training is a failed entry, never raised)."""
        runner = self.runner
        if say is not None:  # on a worker: its own device, progress lines and record of what it trained
            runner = copy.copy(runner)
            runner.say, runner.device = say, pick_device(runner.base.device)
            runner.session = replace(runner.session, trained=set())
        return runner.run(*item)

    def lost(self, item: Item, reason: str) -> Entry:
        """A failed entry whose ``error.txt`` gives the reason its worker gave no result."""
        run_dir = self.runner.entry_dir(*item)
        entry = Entry(item[0], item[1], run_dir=str(run_dir), status="failed", error=f"worker lost: {reason}")
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "error.txt", entry.error + "\n")
        self.runner.say(f"zoo compare: {entry.label}: FAILED — {entry.error}")
        return entry

    def finished(self, item: Item, result: Entry, done: int, total: int) -> None:
        """Record in the call's session which entries were trained here (``merge`` lists them as "ok")."""
        marker = str((Path(result.run_dir) / markers.MARKER).resolve())
        if result.status == "ok":
            self.runner.session.trained.add(marker)
        elif result.status == "reused":
            self.runner.session.trained.discard(marker)

    def failed(self, result: Entry) -> bool:
        """Whether the entry failed."""
        return result.status == "failed"
