"""Resuming a run: the saved config of a run directory with the changes a resume may make (:data:`RESUMABLE`),
checked before any work, and the log of every resume so far (``config.json`` ``resumes``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ZooError
from ..records import read_run_config
from ..rundir import load_checkpoint
from .config import DEFAULT_EPOCHS, RESUMABLE, TrainConfig, data_label, replace_options, resolve_config
from .options import flag


def last_checkpoint(run: Path) -> Path:
    """``run/last.pt``, or the one-line error of a run that cannot be resumed."""
    path = run / "last.pt"
    if not path.is_file():
        raise ZooError(f"cannot resume {str(run)!r}: it has no last.pt (the run stopped before its first epoch "
                       "finished); start it again without --resume")
    return path


@dataclass(frozen=True)
class ResumePlan:
    """A resumed run: its config (the saved one with the allowed changes) and the ``config.json`` log of
    every resume so far (``{"epoch": epochs finished, "changed": {option: [old, new]}}``, this one last)."""

    config: TrainConfig
    resumes: tuple[dict[str, Any], ...]


def resumed_config(run: Path, overrides: dict[str, Any], *, backbone: str | None = None,
                   data: Any = None) -> ResumePlan:
    """The saved config of run directory ``run`` (its ``config.json``) with ``overrides``.

    Only the :data:`RESUMABLE` options may differ from the saved values (``--epochs`` not below the epochs
    already finished); anything else is a one-line error listing what can change, raised before any work."""
    if not (run / "config.json").is_file():
        raise ZooError(f"cannot resume: {str(run)!r} has no config.json (not a zoo run directory)")
    record = read_run_config(run)
    saved = TrainConfig(**{k: v for k, v in record["train"].items() if k in TrainConfig.__dataclass_fields__})
    if backbone is not None:
        overrides = {**overrides, "backbone": backbone}
    cfg = replace_options(saved, overrides)
    if data is not None:
        cfg = dataclasses.replace(cfg, data=data_label(data, saved.data))
    old, new = resolve_config(saved)[0], resolve_config(cfg)[0]
    changed = {f: [getattr(old, f), getattr(new, f)] for f in TrainConfig.__dataclass_fields__
               if getattr(old, f) != getattr(new, f) and f != "progress"}  # progress: display only
    refused = ", ".join(f"{flag(f)} ({a!r} → {b!r})" for f, (a, b) in changed.items() if f not in (*RESUMABLE, "data"))
    if refused:
        raise ZooError(f"cannot change {refused} when resuming {str(run)!r}; a resume may change only "
                       f"{', '.join(map(flag, RESUMABLE))}. Start a new run for other changes")
    finished = int(load_checkpoint(last_checkpoint(run), mmap=True)["epoch"])
    if new.lr == "auto":
        raise ZooError("--lr auto cannot be used with --resume (the range test needs an untrained model); "
                       "give a number")
    if "epochs" in changed and (new.epochs or DEFAULT_EPOCHS) < finished:
        raise ZooError(f"--epochs {new.epochs} is fewer than the {finished} epochs {str(run)!r} already finished; "
                       "a resume can only extend a run")
    resumes = tuple(record.get("resumes", ())) + ({"epoch": finished, "changed": changed},)
    return ResumePlan(cfg, resumes)
