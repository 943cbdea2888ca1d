"""The Ray executor: each entry of a ``compare`` or ``rank`` is one Ray task on a worker with its own GPU/CPU.

The driver starts a local Ray instance (``address=None``: every GPU and core of this machine) or joins a
cluster (``"auto"``, ``"ray://head:10001"``), checks every node (:mod:`.preflight`), submits one task per
entry — the same :meth:`~.executor.Job.run` a serial run calls — and gathers the results in order. Ray
retries a task whose worker or node died (``max_retries``) but never a Python exception; an entry still
lost after that is a failed entry with the reason, and the others go on. Ctrl-C cancels the tasks; the
entries that finished left their markers, so the next call reuses them. Each entry's output goes to its log
file (its run directory); the driver shows one bar of entries done / running / failed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from ..cache import cache_root
from ..errors import ZooError
from . import preflight
from .executor import Executor, Job

INSTALL = "pip install 'backbone-zoo[ray]'"
FORWARDED_ENV = ("BACKBONE_ZOO_PLUGINS", "BACKBONE_ZOO_PASS", "TORCH_HOME", "HF_HOME", "HF_HUB_CACHE",
                 "HF_HUB_OFFLINE")  # set on the workers when set on the driver (BACKBONE_ZOO_CACHE always)


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error with the install command."""
    try:
        import ray
    except ImportError:
        raise ZooError(f"--executor ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def run_entry(job: Job, item: Any, log: str) -> tuple[Any, tuple[float, float]]:
    """On a worker: ``job.run(item)`` with its output in ``log``; the result and when it started and ended."""
    start = time.time()
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", buffering=1) as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        result = job.run(item, say=lambda msg: print(msg, file=f, flush=True))
    return result, (start, time.time())


def lost_reason(exc: BaseException) -> str:
    """One line saying why a task gave no result (its worker died, its node was lost, it was cancelled)."""
    cause = getattr(exc, "cause", None)  # RayTaskError: a Python exception outside the entry's own handling
    if isinstance(cause, BaseException):
        exc = cause
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else 'no message'}"[:500]


class RayExecutor(Executor):
    """Entries as Ray tasks (see the module docstring).

    :param address: None starts a local Ray instance (when this process has not joined one with
        ``ray.init`` already); ``"auto"`` or ``"ray://host:10001"`` joins a cluster.
    :param gpus_per_entry: GPUs each entry holds (fractions share a GPU); None: 1 when the cluster has GPUs, else 0.
    :param cpus_per_entry: CPU cores each entry holds (also its PyTorch thread count).
    :param max_retries: how often Ray reruns an entry whose worker or node died.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, gpus_per_entry: float | None = None,
                 cpus_per_entry: float = 1, max_retries: int = 2, progress: bool = True) -> None:
        if gpus_per_entry is not None and gpus_per_entry < 0 or cpus_per_entry <= 0 or max_retries < 0:
            raise ZooError("--gpus-per-entry must be >= 0, --cpus-per-entry > 0 and max_retries >= 0")
        self.address, self.gpus, self.cpus = address, gpus_per_entry, cpus_per_entry
        self.max_retries, self.progress = max_retries, progress
        import_ray()  # fails here, before any data is read, when Ray is not installed
        self._ray: Any = None
        self._started = False  # this executor started the Ray instance, so close() shuts it down
        self._checked: set[tuple[str, tuple[str, ...]]] = set()
        # for benchmarks: seconds to start or join Ray, to check the nodes, to run the maps; each task's span
        self.stats: dict[str, Any] = {"init_s": 0.0, "prepare_s": 0.0, "map_s": 0.0, "spans": []}

    # ---- the Ray instance -----------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._ray is None:
            ray = import_ray()
            t0 = time.perf_counter()
            if not ray.is_initialized():
                ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=False,
                         logging_level="WARNING")
                self._started = True
            self.stats["init_s"] = time.perf_counter() - t0
            self._ray = ray
            if self.gpus is None:
                self.gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        return self._ray

    def _options(self) -> dict[str, Any]:
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        env["BACKBONE_ZOO_CACHE"] = str(cache_root())
        return {"runtime_env": {"env_vars": env}}

    def close(self) -> None:
        """Shut Ray down when this executor started it."""
        if self._started and self._ray is not None:
            self._ray.shutdown()
        self._ray, self._started = None, False

    # ---- checks before the first task ----------------------------------------------------------------
    def prepare(self, out: Path, backbones: Sequence[str], data: Any) -> None:
        """Every node sees ``out`` and the cache, provides ``backbones`` and reads ``data`` the same way."""
        key = (str(out.resolve()), tuple(backbones))
        if key in self._checked:
            return
        ray = self._connect()
        t0 = time.perf_counter()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        folders = [out.resolve(), cache_root().resolve()]
        token = preflight.write_markers(folders)
        probe = ray.remote(num_cpus=0, **self._options())(preflight.probe)
        try:
            refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote([str(f) for f in folders], token, list(backbones))
                    for n in ray.nodes() if n.get("Alive") and _can_run(n.get("Resources", {}), self.gpus)]
            reports = ray.get(refs)
        finally:
            preflight.remove_markers(folders, token)
        paths = {"output": out, "data": data}
        relative = {what: os.fspath(p) for what, p in paths.items()
                    if isinstance(p, (str, os.PathLike)) and not os.path.isabs(p) and os.path.exists(p)}
        preflight.check(reports, relative=relative)
        self._checked.add(key)
        self.stats["prepare_s"] += time.perf_counter() - t0

    # ---- the entries -----------------------------------------------------------------------------------
    def map(self, job: Job, items: Sequence[Any]) -> list[Any]:
        """Submit one task per item and gather the results in order (see the module docstring)."""
        if not items:
            return []
        ray = self._connect()
        t0 = time.perf_counter()
        task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries,
                          retry_exceptions=False, **self._options())(run_entry)
        job_ref = ray.put(job)
        refs = {task.remote(job_ref, item, str(job.log_path(item))): i for i, item in enumerate(items)}
        results: list[Any] = [None] * len(items)
        pending, failed = list(refs), 0
        slots = self._slots(ray)
        with tqdm(total=len(items), desc=f"{job.what} (ray)", unit="entry", disable=not self.progress,
                  dynamic_ncols=True, file=sys.stderr) as bar:
            try:
                while pending:
                    bar.set_postfix_str(f"running {min(len(pending), slots)}, failed {failed}")
                    ready, pending = ray.wait(pending, num_returns=1)
                    for ref in ready:
                        i = refs[ref]
                        results[i] = self._gather(ray, ref, job, items[i])
                        failed += job.failed(results[i])
                        bar.update(1)
                        job.finished(items[i], results[i], len(items) - len(pending), len(items))
            except KeyboardInterrupt:
                for ref in pending:
                    ray.cancel(ref, force=True)
                bar.write(f"{job.what}: interrupted; cancelled {len(pending)} entries (the finished ones are "
                          "reused by the next call)", file=sys.stderr)
                raise
        self.stats["map_s"] += time.perf_counter() - t0
        return results

    def _gather(self, ray: Any, ref: Any, job: Job, item: Any) -> Any:
        try:
            result, span = ray.get(ref)
        except ray.exceptions.RayError as exc:  # worker or node died (after Ray's retries), or cancelled
            return job.lost(item, lost_reason(exc))
        self.stats["spans"].append(span)
        return result

    def _slots(self, ray: Any) -> int:
        """How many entries the cluster runs at once (for the bar's "running")."""
        total = ray.cluster_resources()
        fits = [total.get("CPU", 0) / self.cpus] + ([total.get("GPU", 0) / self.gpus] if self.gpus else [])
        return max(1, int(min(fits)))


def _can_run(resources: dict[str, float], gpus: float | None) -> bool:
    """Whether a node can take entries (a head node with no CPUs or, for GPU entries, no GPUs cannot)."""
    return resources.get("CPU", 0) > 0 and (not gpus or resources.get("GPU", 0) > 0)
