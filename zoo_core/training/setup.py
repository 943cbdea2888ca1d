"""Everything a run resolves before its first step, in one object: :class:`RunState`, built by
:func:`build_run` from a :class:`~zoo_core.training.config.TrainConfig` and the data.

Both the training paths and the LR range test (:mod:`zoo_core.training.lrfind`) start from a RunState,
so the model and the data are set up in one place. A RunState is replaced, never changed: ``--lr auto``
(:func:`zoo_core.training.lrfind.with_auto_lr`) returns a new one with the suggested learning rate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .. import data as zdata
from .. import logs, strategies
from ..backbones import registry
from ..backbones.adapter import BackboneAdapter, DataConfig
from ..backbones.freezing import Stages
from ..backbones.models import check_image_size, create
from ..distributed import DistContext, per_rank_batch
from ..rundir import RunDir
from ..runtime import autocast_for, pick_device, seed_everything, training_precision
from .config import DEFAULT_EPOCHS, TrainConfig, check_stages, data_options, resolve_config
from .inputs import data_config_for
from .loggers import RunLog, open_log
from .shape import RunShape, run_shape


@dataclass(frozen=True)
class RunState:
    """One run's resolved setup: config, devices, data, model and the choices made from them."""

    cfg: TrainConfig  # as resolved: canonical strategy name, numeric (or found) lr
    strategy: strategies.Strategy
    device: torch.device
    ctx: DistContext  # this process's rank facts (world_size 1 without torchrun)
    split: zdata.DataSplit
    model: nn.Module
    adapter: BackboneAdapter
    plugin: str
    data_cfg: DataConfig
    stages: Stages
    head: str  # the head's module name
    precision: str  # resolved: fp32 | bf16 | fp16
    amp: Callable[[], Any]  # autocast context factory
    scaler: torch.amp.GradScaler | None
    shape: RunShape  # what the config implies: cached path or not, LP-FT probe, shared pixels (training.shape)
    augment: tuple[str, ...]  # the training augmentations (zoo_core.data.augment): shape.augment, narrowed by the probe
    epochs: int | None  # None: the converged head fit
    run: RunDir | None  # None when nothing is written (the LR range test)
    resume: bool = False
    lr_found: dict[str, Any] | None = None  # --lr auto: the range test's suggestion and plot
    resumes: tuple[dict[str, Any], ...] = ()  # every resume of the run so far (resume.ResumePlan.resumes)
    log: RunLog = dataclasses.field(default_factory=RunLog)  # TensorBoard (cfg.log), else logs nothing
    probe: dict[str, Any] | None = None  # LP-FT: the linear probe's record (zoo_core.training.probe)
    surgical: dict[str, Any] | None = None  # --strategy auto: the trials and the choice (training.surgical)

    @property
    def freeze_bn_stats(self) -> bool:
        """True when trainable BatchNorm layers keep their running statistics (``bn_stats``; ``auto``: when
        starting from the probe, whose head was fit on features made with those statistics)."""
        return self.cfg.bn_stats == "frozen" or (self.cfg.bn_stats == "auto" and self.shape.from_probe)

    @property
    def head_fit(self) -> bool:
        """True for the converged head fit (cached features, no epochs): it has no learning rate."""
        return self.shape.cached and self.epochs is None

    @property
    def lr(self) -> float | None:
        """The head's learning rate (None for the converged head fit)."""
        return None if self.head_fit else self.cfg.resolved_lr()

    @property
    def num_classes(self) -> int:
        """Number of classes of the data."""
        return len(self.split.classes)

    @property
    def quiet(self) -> bool:
        """True when this process shows no progress bars (``progress=False``, or not rank 0)."""
        return not (logs.progress(self.cfg.progress) and self.ctx.is_main)

    def say(self, msg: str) -> None:
        """A ``zoo train:`` line for the ``backbone_zoo`` logger, echoed to stderr with ``progress`` (rank 0 only;
        :func:`zoo_core.logs.say`)."""
        if self.ctx.is_main:
            logs.say(msg, echo=self.cfg.progress)

    @property
    def record(self) -> dict[str, Any]:
        """What ``config.json`` holds: the config plus the data and backbone facts and the resolved values."""
        cfg, split = self.cfg, self.split
        return {
            "train": dataclasses.asdict(cfg), "classes": split.classes, "num_classes": self.num_classes,
            "data_source": split.source, "data_fingerprint": split.fingerprint, "data_summary": split.summary(),
            "skipped_files": split.skipped, "data_config": self.data_cfg.to_dict(), "plugin": self.plugin,
            "family": self.adapter.family, "head": self.head, "stages": [s for s, _ in self.stages],
            "augment": list(self.augment),
            "head_init": self.cfg.head_init if self.strategy.trains_backbone() else None,
            "bn_stats": "frozen" if self.freeze_bn_stats else "update",
            "probe": self.probe, "epochs": self.epochs, "lr": self.lr, "device": str(self.device),
            "precision": self.precision, "world_size": self.ctx.world_size, "feature_cache": self.shape.cached and cfg.cache_features,
            "lr_find": self.lr_found, "weights": cfg.weights if cfg.weights is None else str(cfg.weights),
            "resumes": list(self.resumes), "surgical": self.surgical,
        }


@dataclass
class Trained:
    """What a training path hands to the report: the per-epoch history, the best epoch and ``config.json``."""

    history: list[dict[str, Any]]
    best: dict[str, Any]  # {"val_loss", "epoch"}; epoch 0: no epoch finished
    record: dict[str, Any]  # RunState.record plus what the path added (as written to config.json)


def build_run(cfg: TrainConfig, data: Any, *, ctx: DistContext | None = None, run_path: Path | None = None,
              resume: bool = False) -> RunState:
    """Check ``cfg``, seed, load the data, build the model and resolve every choice of the run.

    ``ctx`` is the process group of a torchrun run (default: one process). ``run_path`` is the run
    directory (created only once the data and the model loaded; rank 0 alone writes); ``None`` writes
    nothing. ``cfg.lr == "auto"`` stays unresolved here (see :func:`~zoo_core.training.lrfind.with_auto_lr`).
    """
    cfg, strategy = resolve_config(cfg)
    if cfg.backbone:
        check_image_size(cfg.backbone, cfg.image_size)  # a size the model refuses: one line, before the data loads
    ctx = ctx or DistContext()
    device = ctx.device(pick_device(cfg.device))
    precision = training_precision(cfg.precision, device)  # an unknown --precision fails here, before any work
    if run_path is not None:  # timestamped names differ per rank: rank 0's
        run_path = Path(str(ctx.broadcast_object(str(run_path))))
    log = open_log(cfg, run_path, ctx.is_main)  # a bad --log, or TensorBoard missing, fails here
    seed_everything(cfg.seed)
    split = zdata.load_data(data, val_fraction=cfg.val_fraction, seed=cfg.seed, download=cfg.download,
                            data_root=cfg.data_root, progress=cfg.progress and ctx.is_main, **data_options(cfg))
    adapter, plugin = registry.get_adapter(cfg.backbone)
    model = create(cfg.backbone, num_classes=len(split.classes), weights=cfg.weights)
    stages = adapter.stages(model)
    check_stages(cfg, strategy, [name for name, _ in stages])  # before the run directory and any training
    ctx.sync_module(model)  # under torchrun every rank starts from rank 0's weights (random inits included)
    run = None if run_path is None else RunDir(run_path, enabled=ctx.is_main)  # bad data/weights: no empty dir
    if ctx.rank > 0:  # own augmentation/dropout streams per rank; rank 0 keeps the single-process stream
        seed_everything(cfg.seed + 1_000_003 * ctx.rank)
    shape = run_shape(cfg, strategy)
    if not shape.cached:
        per_rank_batch(cfg.batch_size, ctx.world_size)  # the global batch must split evenly: fail before any work
    amp, scaler = autocast_for(device, precision)
    return RunState(cfg=cfg, strategy=strategy, device=device, ctx=ctx, split=split, model=model, adapter=adapter,
                    plugin=plugin, data_cfg=data_config_for(adapter, cfg), stages=stages,
                    head=adapter.head_name(model), precision=precision, amp=amp, scaler=scaler, shape=shape,
                    augment=shape.augment, run=run, resume=resume, log=log,
                    epochs=cfg.epochs if cfg.epochs is not None else (None if shape.cached else DEFAULT_EPOCHS))


def check_options(cfg: TrainConfig) -> torch.device:
    """Check every option of ``cfg`` that needs neither the data nor a built model (an ``image_size`` the
    backbone does not accept included); the device it runs on."""
    cfg, _ = resolve_config(cfg)
    if cfg.backbone:
        check_image_size(cfg.backbone, cfg.image_size)
    device = pick_device(cfg.device)
    training_precision(cfg.precision, device)
    return device


def join_processes(cfg: TrainConfig) -> DistContext:
    """Check ``cfg`` (a bad option fails before any process joins), then join the process group torchrun
    describes in the environment (one process without it)."""
    return DistContext.from_env(check_options(cfg).type)
