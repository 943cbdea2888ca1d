"""What a run is asked to do: :class:`TrainConfig` (saved in ``config.json``), what it returns
(:class:`TrainResult`), and the checks and names derived from a config before any work starts.

Nothing here mutates a config: every resolved value comes back in a new one (``dataclasses.replace``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import strategies
from ..errors import ZooError


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
    augment: bool | None = None  # None: strategy default (off for feature extraction)
    weights: str | None = "DEFAULT"
    image_size: int | None = None  # override the backbone's input size (e.g. 32 for quick tests)
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    channels_last: bool = True
    num_workers: int | None = None
    early_stopping: int | None = 5  # patience in epochs on validation loss; None disables
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


def resolve_config(cfg: TrainConfig) -> tuple[TrainConfig, strategies.Strategy]:
    """``cfg`` with its strategy's canonical name and a numeric ``lr`` string as a float, and the strategy.

    Rejects option values that would only fail after the data and the model are loaded."""
    strategy = strategies.get_strategy(cfg.strategy)
    if cfg.optimizer not in ("adamw", "sgd"):
        raise ZooError(f"unknown optimizer {cfg.optimizer!r}; choose 'adamw' or 'sgd' (--optimizer)")
    for name in ("epochs", "batch_size", "max_steps"):
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ZooError(f"{name} must be a positive integer, got {value!r} (--{name.replace('_', '-')})")
    lr = cfg.lr
    if isinstance(lr, str) and lr != "auto":
        try:
            lr = float(lr)
        except ValueError:
            raise ZooError(f"lr must be a number or 'auto', got {lr!r} (--lr)") from None
    return dataclasses.replace(cfg, strategy=strategy.name, lr=lr), strategy


def new_run_config(backbone: str | None, data: Any, config: TrainConfig | None,
                   overrides: dict[str, Any]) -> TrainConfig:
    """The config of a new run: ``config`` (or the defaults) with ``overrides``, ``backbone`` and a label for
    ``data`` (its path or name; ``"<object>"`` for a Dataset passed in)."""
    cfg = dataclasses.replace(config or TrainConfig(), **overrides)
    if backbone is not None:
        cfg = dataclasses.replace(cfg, backbone=backbone)
    if data is None:
        data = cfg.data
    if not data:
        raise ZooError("no data given: pass a folder of images (root/<class>/*.jpg) or a dataset name")
    label = data if isinstance(data, str) else str(Path(data)) if isinstance(data, Path) else cfg.data or "<object>"
    return dataclasses.replace(cfg, data=label)


def resumed_config(run: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The saved config of run directory ``run`` (its ``config.json``) with ``overrides``."""
    if not (run / "config.json").is_file():
        raise ZooError(f"cannot resume: {str(run)!r} has no config.json (not a zoo run directory)")
    saved = json.loads((run / "config.json").read_text())["train"]
    cfg = TrainConfig(**{k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__})
    return dataclasses.replace(cfg, **overrides)


def run_name(cfg: TrainConfig) -> str:
    """``cfg.run_name``, else ``<backbone>-<strategy>-<timestamp>``."""
    safe = cfg.backbone.replace("/", "_")
    return cfg.run_name or f"{safe}-{cfg.strategy}-{time.strftime('%Y%m%d-%H%M%S')}"
