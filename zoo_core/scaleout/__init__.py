"""Run the entries of ``compare`` and ``rank`` in this process or as Ray tasks across GPUs and nodes.

``compare(..., executor="ray")`` / ``zoo compare --executor ray``: every backbone × strategy entry (every
rank candidate) is one Ray task calling the library function a serial run calls; the driver gathers the
results and writes the same leaderboard. Modules: :mod:`.executor` (the :class:`Job` an executor runs, the
local executor), :mod:`.ray_backend` (:class:`RayExecutor`; Ray itself is imported only when used),
:mod:`.preflight` (the checks of every node before the first task).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ..errors import ZooError
from .executor import Executor, Job, LocalExecutor
from .ray_backend import RayExecutor, import_ray

EXECUTORS = ("local", "ray")

__all__ = ["EXECUTORS", "Executor", "Job", "LocalExecutor", "RayExecutor", "import_ray", "use_executor"]


@contextmanager
def use_executor(executor: str | Executor | None, progress: bool = True) -> Iterator[Executor]:
    """An :class:`Executor` from ``"local"``, ``"ray"`` (a local Ray instance, or the one ``ray.init`` already
    joined) or an executor object (``RayExecutor(address="auto", gpus_per_entry=1)``, which its owner
    closes); one made here is closed on leaving."""
    if isinstance(executor, Executor):
        yield executor
        return
    if executor not in (None, *EXECUTORS):
        raise ZooError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)} (--executor)")
    with RayExecutor(progress=progress) if executor == "ray" else LocalExecutor(progress) as made:
        yield made
