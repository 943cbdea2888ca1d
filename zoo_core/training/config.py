"""What a run is asked to do: :class:`TrainConfig` (saved in ``config.json``), what it returns
(:class:`TrainResult`), and the checks and names derived from a config before any work starts.

Each field is declared once with its help, rule and policies (:mod:`.options`); :data:`OPTIONS` and
:data:`RESUMABLE` here, the CLI flags, compare's signature and ``RANK_OPTIONS`` are read from those records.

Nothing here mutates a config: every resolved value comes back in a new one (``dataclasses.replace``).
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .. import strategies
from ..data import augment as zaug
from ..errors import ZooError
from ..util import check_output_folder, child_dir, is_single_name
from .options import (
    BOOLEAN,
    FOLDER,
    PATH,
    Option,
    auto_or,
    flag,
    integer,
    kind,
    number,
    one_of,
    option,
    options_of,
    weights_arg,
)

HEAD_INITS = ("probe", "random")  # what ``head_init`` may name (zoo_core.training.probe)
BN_STATS = ("auto", "frozen", "update")  # what ``bn_stats`` may name
LOGGERS = ("tensorboard",)  # what ``log`` may name (zoo_core.training.loggers implements each)
_NAME = (lambda v: isinstance(v, str) and bool(v), "a backbone name (see `zoo list`)")
_INTEGER = (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool), "an integer")
_NOT_EMPTY = (lambda v: isinstance(v, PATH) and bool(os.fspath(v)), "a folder")
_DIRECTORY_NAME = (lambda v: v is None or is_single_name(v), "a folder name without path separators (not '.' or '..')")
_PATIENCE = (lambda v: v == "auto" or integer(0, optional=True)[0](v), "an integer >= 0 or 'auto'")
_LR = (number(0, above=True, optional=True)[0], "a number > 0 or 'auto'")  # 'auto' passes before the rules


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as ``config.json`` in the run directory.

    Each field is one option, declared once with everything about it (:func:`~.options.option`: help, rule,
    resume / signature / rank / lr-find policy); :data:`OPTIONS` lists them and the rest is derived."""

    backbone: str = option("resnet18", "backbone name, e.g. resnet18 or timm/efficientnet_b0", _NAME,
                           cli=False, signed=False)
    data: str = option("", "image folder, built-in dataset name, or '<object>' for a Dataset passed in",
                       kind(str, what="a folder or a dataset name"), cli=False, signed=False)
    strategy: str = option("feature-extraction", "feature-extraction | finetune | full | gradual | auto (trials choose the stages) "
                           "(default: feature-extraction)", kind(str, what=f"one of {', '.join(strategies.STRATEGIES)}"),
                           signed=False)
    epochs: int | None = option(None, "epochs (default: converged head fit for feature-extraction, else 5)",
                                integer(1, optional=True), resumable=True, lr_find=False)
    batch_size: int = option(32, "global batch size (default 32)", integer(1), rank=True)
    lr: float | str | None = option(None, "head learning rate, or 'auto' for the LR range test (default 1e-3 AdamW)",
                                    _LR, resumable=True, lr_find=False, parse=auto_or(float, "a number"))
    backbone_lr_mult: float = option(0.1, "backbone LR as a fraction of the head's (default 0.1)", number(0))
    layer_decay: float = option(0.7, "extra LR factor per stage further from the head (default 0.7)",
                                number(0, 1, above=True))
    weight_decay: float = option(0.05, "weight decay, never on norms and biases (default 0.05)", number(0))
    optimizer: str = option("adamw", "adamw | sgd", one_of(("adamw", "sgd"), "'adamw' or 'sgd'"))
    momentum: float = option(0.9, "SGD momentum", number(0, 1, below=True))
    warmup_epochs: float = option(0.5, "linear warm-up length", number(0), lr_find=False)
    label_smoothing: float = option(0.0, "label smoothing (default 0)", number(0, 1, below=True), lr_find=False)
    trainable_stages: int = option(1, "stages that train with --strategy finetune: 0 to the backbone's stage count "
                                   "(default 1)", integer(0))
    head_epochs: int = option(1, "head-only epochs before unfreezing with --strategy gradual, fewer than --epochs "
                              "(default 1)", integer(0))
    head_init: str = option("probe", "probe (default: fine-tuning starts from the converged linear probe's head, "
                            "LP-FT) | random", one_of(HEAD_INITS, " or ".join(map(repr, HEAD_INITS))))
    bn_stats: str = option("auto", "BatchNorm running statistics while backbone layers train: auto (default: frozen "
                           "when starting from the probe, updated from a random head) | frozen | update",
                           one_of(BN_STATS))
    augment: bool | str | None = option(
        None, "training augmentation: auto (default when fine-tuning: random resized crop and flip, each kept only "
        "if the linear probe shows it preserves this data's labels, a failed crop retried as mild-crop), bare "
        "--augment for crop + flip unchecked, or crop | mild-crop | flip | crop,flip | none; --no-augment for none",
        (zaug.valid_policy, zaug.ARGUMENT_HELP), bare=True, metavar="POLICY",
        off_help=f"train without augmentation (no {', '.join(zaug.AUGMENTATIONS)})")
    weights: str | None = option("DEFAULT", "DEFAULT (pretrained), none (random init), a weight tag, or a "
                                 ".pth/.safetensors file", kind(*PATH, optional=True, what="DEFAULT, None, a weight "
                                 "tag or a checkpoint file"), rank=True, parse=weights_arg)
    image_size: int | None = option(None, "override the backbone's input size in pixels (e.g. 64 for a quick look)",
                                    integer(1, optional=True), rank=True)
    val_fraction: float = option(0.2, "validation share when the data has no val/ folder (default 0.2)",
                                 number(0, 1, above=True, below=True), rank=True)
    seed: int = option(0, "random seed (default 0)", _INTEGER, rank=True)
    device: str = option("auto", "auto | cpu | cuda | cuda:1 | mps", kind(str, what="auto, cpu, cuda, cuda:N or mps"),
                         resumable=True, rank=True)
    precision: str = option("auto", "auto | fp32 | bf16 | fp16", kind(str, what="auto, fp32, bf16 or fp16"),
                            rank=True, lr_find=False)
    channels_last: bool = option(True, "channels-last memory format", BOOLEAN, lr_find=False)
    num_workers: int | None = option(None, "data-loader workers (default: tuned to the machine)",
                                     integer(0, optional=True), resumable=True, signed=False, rank=True)
    early_stopping: int | str | None = option(
        "auto", "patience in epochs on validation loss, 0 disables (default auto: 3 without --epochs, within the "
        "5-epoch budget; 5 with --epochs)", _PATIENCE, resumable=True, lr_find=False,
        parse=auto_or(int, "an integer"))
    cache_features: bool = option(True, "cache frozen-backbone features on disk (default on); off: the backbone still runs once "
                                  "and its features stay in memory (the same result, no files)", BOOLEAN, lr_find=False)
    # decode + resize each split once into the shared pixel cache (features.PixelCache) and feed the frozen
    # feature extraction and every validation pass from it; runs with the same preprocessing (``compare``)
    # reuse it. Results are identical to decoding on the fly. Ignored under torchrun.
    share_decoding: bool = option(False, "decode each split once into the pixel cache, reused by runs of the same "
                                  "input size", BOOLEAN, resumable=True, signed=False)
    download: bool = option(False, "download a built-in dataset (cifar10, …) if missing", BOOLEAN,
                            resumable=True, rank=True)
    data_root: str | None = option(None, "where built-in datasets live (default $BACKBONE_ZOO_DATA or "
                                   "~/.cache/backbone-zoo/datasets)", FOLDER, resumable=True, rank=True)
    image_col: str | None = option(None, "a labels table's image column (default: found by its name: image, "
                                   "image_id, path, file, …)", kind(str, optional=True, what="a column name"),
                                   signed=False, resumable=True, rank=True)
    label_col: str | None = option(None, "a labels table's label column (default: found by its name: label, class, "
                                   "category, target, …)", kind(str, optional=True, what="a column name"),
                                   signed=False, resumable=True, rank=True)
    images: str | None = option(None, "the folder a labels table's relative image paths start from (default: the "
                                "table's folder)", FOLDER, signed=False, resumable=True, rank=True)
    test: str | None = option(None, "held-out test data, a folder of class folders or a labels table (default: "
                              "DATA/test of a train/val folder, a table's split=test rows); loaded and checked, "
                              "never used to choose anything", kind(*PATH, optional=True, what="a folder or a table"),
                              signed=False, resumable=True, lr_find=False)
    out_dir: str = option("runs", "parent folder of run directories (default runs)", _NOT_EMPTY,
                          signed=False, lr_find=False)
    run_name: str | None = option(None, "run directory name", _DIRECTORY_NAME, signed=False, lr_find=False)
    max_steps: int | None = option(None, "stop each epoch after this many steps (smoke tests)",
                                   integer(1, optional=True), lr_find=False)
    progress: bool = option(True, "progress bars and log lines on stderr", BOOLEAN, cli=False, signed=False)
    log: str | None = option(None, "tensorboard: also log scalars, the LR schedule, the confusion matrix and hparams "
                             "to TensorBoard (pip install tensorboard)",
                             one_of(LOGGERS, f"one of {', '.join(LOGGERS)}, or none", optional=True),
                             signed=False, lr_find=False)
    log_dir: str | None = option(None, "with --log: TensorBoard runs go to LOG_DIR/<run name> (default "
                                 "RUN_DIR/tensorboard)", FOLDER, signed=False, lr_find=False)

    def resolved_lr(self) -> float:
        """The head learning rate: explicit, else 1e-3 (AdamW) or 1e-2 (SGD)."""
        if self.lr is not None:
            return float(self.lr)
        return 1e-3 if self.optimizer == "adamw" else 1e-2


OPTIONS: dict[str, Option] = options_of(TrainConfig)
"""Every :class:`TrainConfig` field with its :class:`~.options.Option`, in declaration order."""

RESUMABLE = tuple(name for name, o in OPTIONS.items() if o.resumable)
"""The options a resumed run may change (``--resume RUN --epochs 10``): ``epochs`` only grows (the cosine
schedule then runs to the new end from the resumed step on); a new ``lr`` sets the restored optimizer
groups' ``initial_lr`` and so the rest of the schedule (the saved moments stay). Every resume and its
changes are recorded in ``config.json`` (``resumes``). ``progress`` (display only) and the data's location
(its content is checked) may differ too; any other change would make the saved state belong to another
run, so it is refused."""


@dataclass
class TrainResult:
    """What :func:`zoo_core.train` returns: final metrics, history and where everything was written."""

    run_dir: Path
    backbone: str
    strategy: str
    classes: list[str]
    history: list[dict[str, Any]]
    best_epoch: int
    metrics: dict[str, Any]  # validation metrics of the best checkpoint
    total_params: int
    trainable_params: int
    train_seconds: float
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def best_checkpoint(self) -> Path:
        """Path of ``best.pt``."""
        return self.run_dir / "best.pt"

    def summary(self) -> str:
        """One line: backbone, strategy, best val top-1 and where the run lives."""
        m = self.metrics
        return (f"{self.backbone} [{self.strategy}] val top-1 {m.get('val_acc', float('nan')):.4f} "
                f"val loss {m.get('val_loss', float('nan')):.4f} (epoch {self.best_epoch}) → {self.run_dir}")


# ---- option checks ---------------------------------------------------------------------------------------
DEFAULT_EPOCHS = 5
"""Epochs of a run that trains end to end (or a head by epochs) when ``epochs`` is None: the budget within
which early stopping (:data:`BUDGET_PATIENCE`) ends it and the best epoch is restored."""

BUDGET_PATIENCE = 3
"""``early_stopping="auto"`` without ``--epochs``: stop after this many epochs without a better validation loss."""

GIVEN_PATIENCE = 5
"""``early_stopping="auto"`` with ``--epochs``: the patience of a run whose length the user chose."""


def patience(cfg: TrainConfig) -> int | None:
    """The early-stopping patience of ``cfg`` in epochs (None: never stop early)."""
    if cfg.early_stopping == "auto":
        return BUDGET_PATIENCE if cfg.epochs is None else GIVEN_PATIENCE
    return cfg.early_stopping or None


def _plain(v: Any) -> Any:
    """NumPy and other numeric scalars as Python ints and floats (what ``config.json`` can hold)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Number):
        return v
    return int(v) if isinstance(v, numbers.Integral) else float(v)


def validate(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with every field checked (plain Python numbers; a numeric ``lr`` string as a float).

    A bad value is a one-line :class:`ZooError` naming the option as the command line spells it, the
    value and what is allowed, so Python callers and ``zoo`` users see the same message."""
    lr = cfg.lr
    if isinstance(lr, str) and lr != "auto":
        try:
            lr = float(lr)
        except ValueError:
            raise ZooError(f"--lr must be a number > 0 or 'auto', got {lr!r}") from None
    values = {f.name: _plain(lr if f.name == "lr" else getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    for name, value in values.items():
        o = OPTIONS[name]
        if not (name == "lr" and value == "auto") and not o.check(value):
            raise ZooError(f"{flag(name)} must be {o.allowed}, got {value!r}")
    return dataclasses.replace(cfg, **values)


def resolve_config(cfg: TrainConfig) -> tuple[TrainConfig, strategies.Strategy]:
    """``cfg`` checked (:func:`validate`) with its strategy's canonical name, and the strategy.

    Rejects option values that would only fail (or be ignored) after the data and the model are loaded;
    the stage count is checked once the model is known (:func:`check_stages`)."""
    cfg = validate(cfg)
    strategy = strategies.get_strategy(cfg.strategy)
    epochs = cfg.epochs or DEFAULT_EPOCHS
    # head_epochs matters to this strategy and keeps the backbone frozen through the last epoch (gradual)
    if strategy.trainable_stages(epochs - 1, 1, 1, cfg.head_epochs) < strategy.trainable_stages(epochs - 1, 1, 1, 0):
        raise ZooError(f"--head-epochs {cfg.head_epochs} leaves no epoch to unfreeze the backbone with --strategy "
                       f"{strategy.name} and --epochs {epochs}; use fewer --head-epochs or more --epochs (or "
                       "--strategy feature-extraction to train only the head)")
    return dataclasses.replace(cfg, strategy=strategy.name), strategy


def check_stages(cfg: TrainConfig, strategy: strategies.Strategy, stage_names: Sequence[str]) -> None:
    """Refuse a ``trainable_stages`` beyond the backbone's stages when the strategy uses it (``finetune``):
    it would silently train every layer. Called once the model is known, before any training."""
    n, h = len(stage_names), cfg.head_epochs
    m = max(n, 1)
    uses_k = any(strategy.trainable_stages(e, m, 0, h) != strategy.trainable_stages(e, m, m, h) for e in (0, 10**6))
    if uses_k and cfg.trainable_stages > n:
        raise ZooError(f"--trainable-stages {cfg.trainable_stages} is more than {cfg.backbone} has: {n} stage(s) "
                       f"({', '.join(stage_names) or 'none'}); use 0 to {n} (or --strategy full to train every layer)")


def replace_options(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """``cfg`` with ``overrides`` (TrainConfig fields); an unknown name is a one-line error with close matches."""
    unknown = sorted(set(overrides) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(TrainConfig.__dataclass_fields__), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see zoo_core.TrainConfig for the options"
        raise ZooError(f"unknown training option(s) {', '.join(unknown)}{hint}")
    return dataclasses.replace(cfg, **overrides)


def data_options(cfg: TrainConfig) -> dict[str, Any]:
    """The :func:`~zoo_core.data.load_data` keyword arguments ``cfg`` sets besides the split's."""
    return {"image_col": cfg.image_col, "label_col": cfg.label_col, "images": cfg.images, "test": cfg.test}


def data_label(data: Any, fallback: str = "") -> str:
    """What ``config.json`` records as the data: a path or dataset name, else ``fallback`` or ``"<object>"``."""
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    return fallback or "<object>"


def new_run_config(backbone: str | None, data: Any, config: TrainConfig | None,
                   overrides: dict[str, Any]) -> TrainConfig:
    """The config of a new run: ``config`` (or the defaults) with ``overrides``, ``backbone`` and a label for
    ``data`` (its path or name; ``"<object>"`` for a Dataset passed in)."""
    cfg = replace_options(config or TrainConfig(), overrides)
    if backbone is not None:
        cfg = dataclasses.replace(cfg, backbone=backbone)
    if data is None:
        data = cfg.data
    if not data:
        raise ZooError("no data given: pass a folder of images (root/<class>/*.jpg) or a dataset name")
    return dataclasses.replace(cfg, data=data_label(data, cfg.data))


def run_name(cfg: TrainConfig) -> str:
    """``cfg.run_name``, else ``<backbone>-<strategy>-<timestamp>``."""
    safe = cfg.backbone.replace("/", "_")
    return cfg.run_name or f"{safe}-{cfg.strategy}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_directory(cfg: TrainConfig) -> Path:
    """The run directory ``out_dir/<run name>``: refused unless it stays inside ``out_dir`` and ``out_dir``
    (and ``log_dir``) can be folders (:func:`zoo_core.util.child_dir`)."""
    cfg = validate(cfg)
    check_output_folder(cfg.out_dir, "--out-dir")
    if cfg.log_dir is not None:
        check_output_folder(cfg.log_dir, "--log-dir")
    path = child_dir(cfg.out_dir, run_name(cfg), "--run-name")
    check_output_folder(path, "the run directory")
    return path
