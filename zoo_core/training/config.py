"""What a run is asked to do: :class:`TrainConfig` (saved in ``config.json``), what it returns
(:class:`TrainResult`), and the checks and names derived from a config before any work starts.

Nothing here mutates a config: every resolved value comes back in a new one (``dataclasses.replace``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import strategies
from ..data import augment as zaug
from ..errors import ZooError
from ..rundir import load_checkpoint


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as ``config.json`` in the run directory."""

    backbone: str = "resnet18"
    data: str = ""  # image folder, built-in dataset name, or "<object>" for a Dataset passed in
    strategy: str = "feature-extraction"
    epochs: int | None = None  # None: converged head fit (feature-extraction) or 5 epochs
    batch_size: int = 32
    lr: float | str | None = None  # head learning rate; None: 1e-3 AdamW / 1e-2 SGD; "auto": LR range test
    backbone_lr_mult: float = 0.1  # backbone stages get this fraction of the head's LR …
    layer_decay: float = 0.7  # … times this per stage further from the head
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9)
    momentum: float = 0.9
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    trainable_stages: int = 1  # for the "finetune" strategy
    head_epochs: int = 1  # for the "gradual" strategy
    head_init: str = "probe"  # strategies that train the backbone start from the linear probe's head, or "random"
    bn_stats: str = "auto"  # BatchNorm statistics while the backbone trains: frozen | update | auto (frozen from the probe)
    augment: bool | str | None = None  # None/"auto": each augmentation checked on the data (off for feature extraction)
    weights: str | None = "DEFAULT"
    image_size: int | None = None  # override the backbone's input size (e.g. 32 for quick tests)
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    channels_last: bool = True
    num_workers: int | None = None
    early_stopping: int | str | None = "auto"  # patience on validation loss; "auto": 3 without --epochs, else 5
    cache_features: bool = True
    # decode + resize each split once into the shared pixel cache (features.PixelCache) and feed the frozen
    # feature extraction and every validation pass from it; runs with the same preprocessing (``compare``)
    # reuse it. Results are identical to decoding on the fly. Ignored under torchrun.
    share_decoding: bool = False
    download: bool = False
    data_root: str | None = None
    out_dir: str = "runs"
    run_name: str | None = None
    max_steps: int | None = None  # stop each epoch after this many steps (smoke tests, --dry-run)
    progress: bool = True
    log: str | None = None  # "tensorboard": also log to TensorBoard (see zoo_core.training.loggers)
    log_dir: str | None = None  # parent folder of TensorBoard runs: LOG_DIR/<run name> (default RUN_DIR/tensorboard)

    def resolved_lr(self) -> float:
        """The head learning rate: explicit, else 1e-3 (AdamW) or 1e-2 (SGD)."""
        if self.lr is not None:
            return float(self.lr)
        return 1e-3 if self.optimizer == "adamw" else 1e-2


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

RESUMABLE = ("epochs", "lr", "early_stopping", "num_workers", "device", "data_root", "download", "share_decoding")
"""The options a resumed run may change (``--resume RUN --epochs 10``): ``epochs`` only grows (the cosine
schedule then runs to the new end from the resumed step on); a new ``lr`` sets the restored optimizer
groups' ``initial_lr`` and so the rest of the schedule (the saved moments stay). Every resume and its
changes are recorded in ``config.json`` (``resumes``). ``progress`` (display only) and the data's location
(its content is checked) may differ too; any other change would make the saved state belong to another
run, so it is refused."""


def flag(name: str) -> str:
    """The command-line spelling of a :class:`TrainConfig` field: ``batch_size`` → ``--batch-size``."""
    return "BACKBONE" if name == "backbone" else "--" + name.replace("_", "-")


def _integer(low: int, *, optional: bool = False) -> tuple[Callable[[Any], bool], str]:
    def ok(v: Any) -> bool:
        return (optional and v is None) or (isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                             and v >= low)
    return ok, {0: "an integer >= 0", 1: "a positive integer"}.get(low, f"an integer >= {low}")


def _number(low: float, high: float = math.inf, *, above: bool = False, below: bool = False,
            optional: bool = False) -> tuple[Callable[[Any], bool], str]:
    """A finite real in the interval from ``low`` to ``high`` (``above``/``below``: open at that end)."""
    def ok(v: Any) -> bool:
        if optional and v is None:
            return True
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
            return False
        return (v > low if above else v >= low) and (v < high if below else v <= high)
    if high == math.inf:
        what = f"a number {'>' if above else '>='} {low:g}"
    else:
        what = f"a number in {'(' if above else '['}{low:g}, {high:g}{')' if below else ']'}"
    return ok, what


def _kind(*types: type, optional: bool = False, what: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: (optional and v is None) or isinstance(v, types)), what


_PATH = (str, os.PathLike)
HEAD_INITS = ("probe", "random")  # what ``head_init`` may name (zoo_core.training.probe)
BN_STATS = ("auto", "frozen", "update")  # what ``bn_stats`` may name
LOGGERS = ("tensorboard",)  # what ``log`` may name (zoo_core.training.loggers implements each)
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {  # field → (check, what is allowed)
    "backbone": (lambda v: isinstance(v, str) and bool(v), "a backbone name (see `zoo list`)"),
    "data": _kind(str, what="a folder or a dataset name"),
    "strategy": _kind(str, what=f"one of {', '.join(strategies.STRATEGIES)}"),
    "epochs": _integer(1, optional=True),
    "batch_size": _integer(1),
    "lr": (_number(0, above=True, optional=True)[0], "a number > 0 or 'auto'"),  # 'auto' passes before the rules
    "backbone_lr_mult": _number(0),
    "layer_decay": _number(0, 1, above=True),
    "weight_decay": _number(0),
    "optimizer": (lambda v: v in ("adamw", "sgd"), "'adamw' or 'sgd'"),
    "momentum": _number(0, 1, below=True),
    "warmup_epochs": _number(0),
    "label_smoothing": _number(0, 1, below=True),
    "trainable_stages": _integer(0),
    "head_epochs": _integer(0),
    "head_init": (lambda v: v in HEAD_INITS, " or ".join(map(repr, HEAD_INITS))),
    "bn_stats": (lambda v: v in BN_STATS, ", ".join(map(repr, BN_STATS))),
    "augment": (zaug.valid_policy, zaug.ARGUMENT_HELP),
    "weights": _kind(*_PATH, optional=True, what="DEFAULT, None, a weight tag or a checkpoint file"),
    "image_size": _integer(1, optional=True),
    "val_fraction": _number(0, 1, below=True),
    "seed": (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool), "an integer"),
    "device": _kind(str, what="auto, cpu, cuda, cuda:N or mps"),
    "precision": _kind(str, what="auto, fp32, bf16 or fp16"),
    "channels_last": _kind(bool, what="true or false"),
    "num_workers": _integer(0, optional=True),
    "early_stopping": (lambda v: v == "auto" or _integer(0, optional=True)[0](v), "an integer >= 0 or 'auto'"),
    "cache_features": _kind(bool, what="true or false"),
    "share_decoding": _kind(bool, what="true or false"),
    "download": _kind(bool, what="true or false"),
    "data_root": _kind(*_PATH, optional=True, what="a folder"),
    "out_dir": (lambda v: isinstance(v, _PATH) and bool(os.fspath(v)), "a folder"),
    "run_name": (lambda v: v is None or (isinstance(v, str) and bool(v) and not set("/\\\0") & set(v)),
                 "a folder name without path separators"),
    "max_steps": _integer(1, optional=True),
    "progress": _kind(bool, what="true or false"),
    "log": (lambda v: v is None or v in LOGGERS, f"one of {', '.join(LOGGERS)}, or none"),
    "log_dir": _kind(*_PATH, optional=True, what="a folder"),
}
"""What every :class:`TrainConfig` field accepts; :func:`validate` applies them."""


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
        ok, what = _RULES.get(name, (lambda v: True, ""))  # tests/test_validation.py: every field has a rule
        if not (name == "lr" and value == "auto") and not ok(value):
            raise ZooError(f"{flag(name)} must be {what}, got {value!r}")
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
    record = json.loads((run / "config.json").read_text())
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


def run_name(cfg: TrainConfig) -> str:
    """``cfg.run_name``, else ``<backbone>-<strategy>-<timestamp>``."""
    safe = cfg.backbone.replace("/", "_")
    return cfg.run_name or f"{safe}-{cfg.strategy}-{time.strftime('%Y%m%d-%H%M%S')}"
