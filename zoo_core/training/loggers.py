"""Where a run's metrics go besides its own files: TensorBoard (``log="tensorboard"``), behind one interface.

A run holds one :class:`RunLog` (``RunState.log``): the epoch loop calls :meth:`RunLog.epoch` after each
epoch and :func:`zoo_core.training.report.finish` calls :meth:`RunLog.finish` once. The base class does
nothing: it is the default (``log=None``), and what the LR range test and every rank but 0 get.

:class:`TensorBoardLog` writes through ``torch.utils.tensorboard`` (the ``tensorboard`` package, an optional
extra) into ``RUN_DIR/tensorboard/`` or ``LOG_DIR/<run name>/`` (``log_dir``; ``compare`` puts every entry
under one). Tags: per epoch ``train/loss``, ``train/accuracy``, ``val/loss``, ``val/accuracy``,
``val/top5`` (5 classes or more), ``train/lr``, ``train/images_per_s`` (x axis: the epoch); the learning-rate
schedule ``lr/<optimizer group>`` at every optimizer step (x axis: the step); at the end the image
``val/confusion_matrix`` and the run's hyperparameters with its best-epoch metrics (HParams dashboard,
metrics ``hparam/val_accuracy``, ``hparam/val_loss``). The writer opens at the first epoch, so a run
that fails before it leaves no log directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ZooError
from ..outputs import plots
from ..util import child_dir
from .config import TrainConfig

"""The values ``TrainConfig.log`` (``--log``) takes besides None."""

_EPOCH_TAGS = {"train_loss": "train/loss", "train_acc": "train/accuracy", "val_loss": "val/loss",
               "val_acc": "val/accuracy", "val_top5": "val/top5", "lr": "train/lr",
               "images_per_s": "train/images_per_s"}
_METRIC_TAGS = {"val_acc": "hparam/val_accuracy", "val_loss": "hparam/val_loss", "val_top5": "hparam/val_top5"}


class RunLog:
    """A run's log that logs nothing (the default)."""

    dir: Path | None = None  # where the log is written (None: nowhere)

    def epoch(self, row: dict[str, Any], optimizer: Any = None, lr_at: Callable[[int], float] | None = None,
              steps: range = range(0)) -> None:
        """A finished epoch: its history ``row`` and, for the LR schedule, the optimizer, the loop's LR
        multiplier ``lr_at`` and the global ``steps`` the epoch took."""

    def finish(self, *, matrix: Sequence[Sequence[int]], classes: Sequence[str], best_epoch: int, title: str,
               hparams: dict[str, Any], metrics: dict[str, Any]) -> None:
        """The end of the run: the validation confusion matrix, the hyperparameters and the best metrics."""


class TensorBoardLog(RunLog):
    """A run's TensorBoard event files in ``log_dir`` (see the module docstring for the tags)."""

    def __init__(self, log_dir: Path) -> None:
        self.dir = log_dir
        self._writer: Any = None

    def _open(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=os.fspath(self.dir))
        return self._writer

    def epoch(self, row: dict[str, Any], optimizer: Any = None, lr_at: Callable[[int], float] | None = None,
              steps: range = range(0)) -> None:
        """Scalars of the epoch, the LR of each optimizer group at each step; flushed, so a crash loses nothing."""
        w = self._open()
        for key, tag in _EPOCH_TAGS.items():
            if row.get(key) is not None:
                w.add_scalar(tag, row[key], row["epoch"])
        if optimizer is not None and lr_at is not None:
            groups = {g.get("name", f"group{i}"): g.get("initial_lr", g["lr"])
                      for i, g in enumerate(optimizer.param_groups)}
            for step in steps:
                factor = lr_at(step)
                for name, lr in groups.items():
                    w.add_scalar(f"lr/{name}", lr * factor, step)
        w.flush()

    def finish(self, *, matrix: Sequence[Sequence[int]], classes: Sequence[str], best_epoch: int, title: str,
               hparams: dict[str, Any], metrics: dict[str, Any]) -> None:
        """The confusion-matrix image at the best epoch and the HParams record; closes the writer."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        w = self._open()
        w.add_figure("val/confusion_matrix", plots.confusion_figure(matrix, classes, title), best_epoch, close=True)
        values = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
        scores = {tag: float(metrics[k]) for k, tag in _METRIC_TAGS.items() if metrics.get(k) is not None}
        for summary in hparams_summary(values, scores):
            w.file_writer.add_summary(summary)
        for tag, value in scores.items():
            w.add_scalar(tag, value, best_epoch)
        w.close()
        self._writer = None


def check_log(cfg: TrainConfig) -> None:
    """Fail before any work on a ``log_dir`` without ``log``, or TensorBoard not installed (the value of
    ``log`` itself is checked with every other option, in :func:`zoo_core.training.config.validate`)."""
    if cfg.log is None:
        if cfg.log_dir is not None:
            raise ZooError(f"log_dir {cfg.log_dir!r} is set but log is not: add --log tensorboard")
        return
    try:
        import tensorboard  # noqa: F401 - torch.utils.tensorboard needs the real package
    except ImportError:
        raise ZooError("--log tensorboard needs the tensorboard package: pip install tensorboard") from None


def open_log(cfg: TrainConfig, run_path: Path | None, is_main: bool) -> RunLog:
    """The log of a run in ``run_path`` (checked by :func:`check_log`); a :class:`RunLog` that logs nothing
    without ``cfg.log``, without a run directory, or off rank 0."""
    check_log(cfg)
    if cfg.log is None or run_path is None or not is_main:
        return RunLog()
    return TensorBoardLog(child_dir(cfg.log_dir, run_path.name, "--run-name") if cfg.log_dir
                          else run_path / "tensorboard")
