"""One compare call from start to finish: :func:`compare` and the :class:`EntryRunner` it drives.

1. :func:`.plan.make_plan` checks every argument and expands backbones × strategies into a
   :class:`~.plan.Plan` before any data is read (a pre-selection step that narrows the plan on the loaded
   data goes right after step 2);
2. the data split is loaded once, and every entry trains and is scored on it;
3. :meth:`EntryRunner.run`, entry after entry: reuse a finished run with the same signature
   (:mod:`.markers`); else decode its images once into the shared pixel cache before its clock starts
   (:func:`zoo_core.training.shape.decode_once`), train it and time its inference pass, both under one
   :class:`~.measure.PeakMemory`, and write its marker; unavailable pretrained weights fall back to random
   init when asked (:func:`zoo_core.training.fallback.falls_back`); any other failure is recorded and the
   other entries go on;
4. ``merge=True`` adds the finished entries earlier calls left in ``out_dir``;
5. the ranked :class:`~.leaderboard.Leaderboard` gets its statistics (:func:`.significance.annotate`)
   and, with ``folds=K``, each feature-extraction entry's fold values (:func:`.folds.add_folds`);
6. :func:`.leaderboard.write_outputs` writes ``leaderboard.md``/``.csv``/``.json`` and the plots.

State lives in objects, never in the module: an :class:`EntryRunner` for one call (which backbones'
weights failed), a :class:`Session` for the calls that share it (which entries were trained, not reused).
Progress goes to stderr; compare prints no table (the CLI prints it once, on stdout).

Seams: each entry calls ``run.train`` (this module's name for :func:`zoo_core.train`) and
``measure.inference_speed`` through their modules, so tests can replace either.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .. import data as zdata
from .. import logs
from ..backbones.weights import RANDOM_INIT, weights_label
from ..errors import WeightsError
from ..runtime import pick_device
from ..scaleout import Executor, use_executor
from ..stats import majority_baseline
from ..training import TrainConfig, train
from ..training.config import data_options
from ..training.fallback import falls_back
from ..training.shape import decode_once
from ..util import atomic_write_text, check_output_folder, child_dir
from . import folds as zfolds
from . import markers, measure, significance
from .fanout import CompareJob
from .folds import check_folds
from .leaderboard import Entry, Leaderboard, ranked, write_outputs
from .plan import make_plan
from .select import DEFAULT_KEEP, make_selection, successive_halving

Say = Callable[[str], None]


@dataclass
class Session:
    """The entry markers that the compare calls sharing this object trained (not reused), so that a later
    call's ``merge=True`` lists those entries as "ok" rather than "reused" (the demo's two calls share one).
    A call without one gets its own."""

    trained: set[str] = field(default_factory=set)  # resolved paths of entry.json files


class EntryRunner:
    """Runs (or reuses) the entries of one compare call, one at a time, on one split and device."""

    def __init__(self, split: Any, base: TrainConfig, out: Path, device: torch.device, *, say: Say,
                 session: Session, fallback_random: bool = False, rerun: bool = False,
                 progress: bool = True) -> None:
        self.split, self.base, self.out, self.device, self.say = split, base, out, device, say
        self.session, self.fallback_random, self.rerun, self.progress = session, fallback_random, rerun, progress
        self.unavailable: set[str] = set()  # backbones whose pretrained weights failed once: not retried

    def _log_dir(self) -> str | None:
        """TensorBoard: one run per entry under one folder (``--log-dir``, default ``OUT/tensorboard``)."""
        return (self.base.log_dir or str(self.out / "tensorboard")) if self.base.log else None

    def entry_dir(self, backbone: str, strategy: str) -> Path:
        """The run directory of ``backbone`` × ``strategy``: ``<out>/runs/<backbone>-<strategy>``."""
        run_name = re.sub(r"[/\\\0]", "_", backbone) + f"-{strategy}"
        return child_dir(self.out / "runs", run_name, "compare entry name")

    def run(self, backbone: str, strategy: str) -> Entry:
        """The entry of ``backbone`` × ``strategy``: reused, trained, trained from random init, or failed."""
        run_name = self.entry_dir(backbone, strategy).name
        entry = Entry(backbone, strategy, run_dir=str(self.entry_dir(backbone, strategy)))
        weights = None if (self.fallback_random and backbone in self.unavailable) else self.base.weights
        while True:
            cfg = dataclasses.replace(self.base, backbone=backbone, strategy=strategy, out_dir=str(self.out / "runs"),
                                      run_name=run_name, progress=self.progress, weights=weights,
                                      log_dir=self._log_dir())
            entry.config = cfg
            sig = markers.signature(backbone, strategy, self.split.fingerprint, cfg)
            marker = Path(entry.run_dir) / markers.MARKER
            if not self.rerun and markers.reuse(entry, sig):
                self.session.trained.discard(str(marker.resolve()))
                self.say(f"zoo compare: {entry.label}: reusing finished run {entry.run_dir}")
                return entry
            old_marker = marker.read_text() if marker.is_file() else None
            try:
                self._train(entry, cfg, sig)
                return entry
            except WeightsError as exc:
                if not self._falls_back(entry, weights, exc, old_marker):
                    _fail(entry, exc, self.say)
                    return entry
                weights = None
            except (Exception, torch.cuda.OutOfMemoryError) as exc:  # noqa: BLE001 - recorded, others go on
                _fail(entry, exc, self.say)
                return entry

    def _train(self, entry: Entry, cfg: TrainConfig, sig: str) -> None:
        """Train and measure the entry, then mark it finished."""
        self.say(f"zoo compare: {entry.label}: training{' from ' + RANDOM_INIT if cfg.weights is None else ''} …")
        entry.weights = weights_label(cfg.weights)
        run_dir = Path(entry.run_dir)
        (run_dir / markers.MARKER).unlink(missing_ok=True)  # the run is being rewritten: never reuse it half-way
        (run_dir / "error.txt").unlink(missing_ok=True)
        decode_once(cfg, self.split, progress=self.progress)
        with measure.PeakMemory(self.device) as mem:  # the inference pass is part of the entry's peak
            train(config=cfg, data=self.split)
            speed = measure.inference_speed(run_dir, self.device)
        entry.peak_mem_mb, entry.infer_images_per_s = round(mem.peak_mb, 1), round(speed, 1)
        markers.fill_from_run(entry, run_dir)
        entry.status = "ok"
        self.session.trained.add(str(markers.write_marker(entry, sig).resolve()))

    def _falls_back(self, entry: Entry, weights: str | None, exc: WeightsError, old_marker: str | None) -> bool:
        """True when the entry goes on from random init after its pretrained ``weights`` failed."""
        if not falls_back(weights, exc, allowed=self.fallback_random, say=self.say,
                          who=f"zoo compare: {entry.label}", going_on="running"):
            return False
        if old_marker is not None:  # the weights failed before the run directory was touched
            atomic_write_text(Path(entry.run_dir) / markers.MARKER, old_marker)
        self.unavailable.add(entry.backbone)
        return True


def _fail(entry: Entry, exc: BaseException, say: Say) -> None:
    entry.status = "failed"
    entry.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    say(f"zoo compare: {entry.label}: FAILED — {entry.error}")
    Path(entry.run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(entry.run_dir) / "error.txt", "".join(tb))


def add_folds(board: Leaderboard, split: Any, k: int, device: torch.device, say: Say, progress: bool) -> None:
    """``folds=K``: the fold values of every feature-extraction entry this call ran (a failure is a note)."""
    for e in board.entries:
        t0 = time.perf_counter()
        try:
            if zfolds.add_folds(e, split, k, device, quiet=not progress):
                say(f"zoo compare: {e.label}: top-1 over {k} folds {e.folds_mean:.4f} ± {e.folds_std:.4f} "
                    f"({time.perf_counter() - t0:.1f}s)")
        except Exception as exc:  # noqa: BLE001 - the leaderboard is still written
            e.add_note(f"folds failed: {type(exc).__name__}: {exc}")
            say(f"zoo compare: {e.label}: folds FAILED — {type(exc).__name__}: {exc}")


def _stderr(msg: str) -> None:
    logs.say(msg)


def compare(backbones: Sequence[str] | str | None, data: Any, *, strategies: Sequence[str] | str | None = None,
            family: str | None = None, out_dir: str | os.PathLike = "zoo-compare", fallback_random: bool = False,
            rerun: bool = False, merge: bool = False, progress: bool = True, max_entries: int | None = 64,
            folds: int | None = None, session: Session | None = None, select: int | None = None,
            select_keep: float = DEFAULT_KEEP, select_budget: int | None = None, select_score: str = "probe",
            executor: str | Executor = "local", **train_overrides: Any) -> Leaderboard:
    """Run every backbone × strategy on the same data and write the leaderboard into ``out_dir``.

    :param strategies: strategy names (default ``["feature-extraction"]``); ``strategy="finetune"`` also works.
    :param fallback_random: when pretrained weights are unavailable, run that entry from random init
        (marked "RANDOM INIT" in the output and leaderboard) instead of recording a failure. A local
        weights file that is missing or does not fit is always a failure.
    :param rerun: ignore finished entries and run everything again.
    :param merge: also list finished entries already in ``out_dir`` from earlier calls (other backbones,
        strategies or budgets), so one folder accumulates one leaderboard.
    :param progress: progress lines and bars on stderr (the table itself is never printed: ``print(board)``).
    :param max_entries: refuse (before touching any data) to run more backbone × strategy entries than
        this — a bare ``family="timm"`` is over a thousand backbones; None lifts the limit.
    :param folds: ``K >= 2``: also fit each feature-extraction entry's head on K stratified folds of
        train+val (cached features) and report the mean ± std top-1 (see :mod:`zoo_core.comparison.folds`).
    :param session: shared by several calls (:class:`Session`), their trained entries stay "ok" under merge.
    :param select: successive halving (:mod:`zoo_core.comparison.select`): rank every backbone without
        training (``select_score``, on ``select_budget`` training images or all of them), train feature
        extraction on the best ``select_keep`` fraction, then the other strategies (``finetune`` when only
        feature extraction was asked) on the ``select`` best of those by top-1.
    :param executor: ``"local"`` (this process, entry after entry) or ``"ray"`` (each entry a Ray task on its
        own GPU or cores, :mod:`zoo_core.scaleout`; a :class:`~zoo_core.scaleout.RayExecutor` sets the address
        and resources); the same leaderboard either way.
    :param train_overrides: any :class:`zoo_core.TrainConfig` field (epochs, image_size, lr, …).
        ``share_decoding`` defaults to True here: images are decoded once per distinct input size.
    """
    plan = make_plan(backbones, data, strategies=strategies, family=family, max_entries=max_entries, folds=folds,
                     overrides=train_overrides,
                     select=make_selection(select, select_keep, select_budget, select_score))
    out = check_output_folder(out_dir, "--out")  # before any data is read
    if plan.base.log_dir is not None:
        check_output_folder(plan.base.log_dir, "--log-dir")
    split = zdata.load_data(data, val_fraction=plan.base.val_fraction, seed=plan.base.seed,
                            download=plan.base.download, data_root=plan.base.data_root, progress=progress,
                            **data_options(plan.base))
    check_folds(plan.folds, len(split.train) + len(split.val))
    base = dataclasses.replace(plan.base, data=plan.base.data or split.source)  # config.json records it (--resume)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(base.device)
    say: Say = _stderr if progress else partial(logs.say, echo=False)
    say(f"zoo compare: {len(plan.backbones)} backbone(s) × {len(plan.strategies)} strategy(ies) on {split.summary()}")
    runner = EntryRunner(split, base, out, device, say=say, session=session if session is not None else Session(),
                         fallback_random=fallback_random, rerun=rerun, progress=progress)
    selection, job = None, CompareJob(runner)
    with use_executor(executor, progress) as ex:
        ex.prepare(out, plan.backbones, data)
        if plan.select is not None:
            entries, selection = successive_halving(plan, split, out, plan.select, lambda items: ex.map(job, items),
                                                    say=say, fallback_random=fallback_random, progress=progress,
                                                    executor=ex)
        else:
            entries = ex.map(job, plan.entries)
    if merge:
        entries += markers.earlier_entries(out, {(e.backbone, e.strategy) for e in entries}, runner.session.trained)
    board = Leaderboard(ranked(entries), out, selection, majority_baseline(
        zdata.known_labels(split.val), zdata.known_labels(split.train)))
    significance.annotate(board.entries)
    if plan.folds:
        add_folds(board, split, plan.folds, device, say, progress)
    write_outputs(board, split)
    say(f"zoo compare: leaderboard in {out}/leaderboard.md (.csv, .json), plots in {out}/*.png, "
        f"everything in one page: {out}/report.html")
    return board
