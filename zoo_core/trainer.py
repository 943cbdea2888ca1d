"""The shared trainer: any registered backbone on a target dataset, with any strategy.

``train(backbone, data, strategy=..., epochs=...)`` reads top to bottom in :func:`_fit`: build the model
and the data, then per epoch (re)apply the strategy's freezing, train one epoch, evaluate, log, and
checkpoint. Policy lives in :mod:`zoo_core.strategies`; files in :mod:`zoo_core.rundir`. A
feature-extraction run without augmentation runs the frozen backbone once over the data
(:mod:`zoo_core.features`) and trains the head on the cached features.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset
from tqdm.auto import tqdm

from . import data as zdata
from . import plots, registry, strategies
from .adapter import BackboneAdapter, DataConfig
from .distributed import DistContext, DistributedEpochSampler, ShardSampler, epoch_permutation, per_rank_batch
from .errors import TrainingError, ZooError
from .freezing import count_parameters
from .models import create
from .rundir import RunDir, load_checkpoint
from .runtime import autocast_for, pick_device, resolve_precision, seed_everything, training_precision

log = logging.getLogger("zoo_core")


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

    def resolved_lr(self) -> float:
        """The head learning rate: explicit, else 1e-3 (AdamW) or 1e-2 (SGD)."""
        if self.lr is not None:
            return float(self.lr)
        return 1e-3 if self.optimizer == "adamw" else 1e-2


@dataclass
class TrainResult:
    """What :func:`train` returns: final metrics, history and where everything was written."""

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


# ---- small named pieces around the loop -----------------------------------------------------------


class EpochSampler(Sampler[int]):
    """Shuffles with a generator seeded by ``seed + epoch``, so a resumed run sees the same order."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        return iter(epoch_permutation(self.n, self.seed, self.epoch))

    def __len__(self) -> int:
        return self.n


def topk_correct(logits: torch.Tensor, target: torch.Tensor, k: int) -> int:
    """Number of rows whose target is among the ``k`` highest logits."""
    k = min(k, logits.shape[1])
    return int((logits.topk(k, dim=1).indices == target[:, None]).any(dim=1).sum())


@torch.no_grad()
def evaluate(module: nn.Module, loader: DataLoader, prepare: Any, amp: Any, *, num_classes: int,
             ctx: DistContext, device: torch.device, want_preds: bool = False) -> dict[str, Any]:
    """Validation loss, top-1/top-5 (and predictions) of ``module``; restores its train/eval mode."""
    was_training = module.training
    module.eval()
    loss_sum = correct = correct5 = n = 0.0
    preds, targets = [], []
    for x, y in loader:
        x, y = prepare(x), y.to(device, non_blocking=True)
        with amp():
            logits = module(x)
        logits = logits.float()
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += topk_correct(logits, y, 1)
        correct5 += topk_correct(logits, y, 5)
        n += len(y)
        if want_preds:
            preds.append(logits.argmax(1).cpu())
            targets.append(y.cpu())
    module.train(was_training)
    loss_sum, correct, correct5, n = ctx.sum([loss_sum, correct, correct5, n], device)
    out: dict[str, Any] = {"val_loss": loss_sum / max(n, 1), "val_acc": correct / max(n, 1)}
    if num_classes >= 5:
        out["val_top5"] = correct5 / max(n, 1)
    if want_preds:
        out["preds"] = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
        out["targets"] = torch.cat(targets) if targets else torch.empty(0, dtype=torch.long)
    return out


def train_one_epoch(module: nn.Module, loader: DataLoader, prepare: Any, amp: Any, scaler: Any,
                    optimizer: torch.optim.Optimizer, lr_at: Any, step: int, *, label_smoothing: float,
                    max_steps: int | None, bar: Any, ctx: DistContext, device: torch.device) -> tuple[dict, int]:
    """One pass over ``loader``; returns (train metrics, global step after the epoch)."""
    module.train()
    loss_sum = correct = n = 0.0
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(loader):
        if max_steps is not None and i >= max_steps:
            break
        strategies.set_lr(optimizer, lr_at(step))
        x, y = prepare(x), y.to(device, non_blocking=True)
        with amp():
            logits = module(x)
        loss = nn.functional.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        step += 1
        loss_sum += float(loss.detach()) * len(y)
        correct += topk_correct(logits.detach().float(), y, 1)
        n += len(y)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / n:.4f}", acc=f"{correct / n:.3f}",
                        img_s=f"{n * ctx.world_size / (time.perf_counter() - t0):.0f}")
    seconds = time.perf_counter() - t0
    loss_sum, correct, n = ctx.sum([loss_sum, correct, n], device)
    return {"train_loss": loss_sum / max(n, 1), "train_acc": correct / max(n, 1),
            "images_per_s": n / max(seconds, 1e-9), "epoch_seconds": seconds}, step


def confusion(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Confusion matrix counts, rows = true class."""
    idx = targets * num_classes + preds
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes).tolist()


def per_class_table(matrix: list[list[int]], classes: list[str]) -> list[dict[str, Any]]:
    """Per-class support, correct and accuracy from a confusion matrix."""
    rows = []
    for i, name in enumerate(classes):
        support = sum(matrix[i])
        rows.append({"class": name, "support": support, "correct": matrix[i][i],
                     "accuracy": round(matrix[i][i] / support, 4) if support else None})
    return rows


def _run_name(cfg: TrainConfig) -> str:
    safe = cfg.backbone.replace("/", "_")
    return cfg.run_name or f"{safe}-{cfg.strategy}-{time.strftime('%Y%m%d-%H%M%S')}"


# ---- the run -------------------------------------------------------------------------------------


def train(backbone: str | None = None, data: Any = None, *, config: TrainConfig | None = None,
          resume: str | Path | None = None, **overrides: Any) -> TrainResult:
    """Train ``backbone`` on ``data`` (folder, built-in name, Dataset or DataSplit).

    The seed recipe — pretrained ResNet-18, frozen, new 2-class head — is::

        result = zoo_core.train("resnet18", "path/to/cats_vs_dogs", strategy="feature-extraction")

    Keyword ``overrides`` set any :class:`TrainConfig` field. ``resume=RUN_DIR`` continues an
    interrupted run from its ``last.pt`` with the saved config.
    """
    if resume is not None:
        run = Path(resume)
        if not (run / "config.json").is_file():
            raise ZooError(f"cannot resume: {str(run)!r} has no config.json (not a zoo run directory)")
        saved = json.loads((run / "config.json").read_text())["train"]
        cfg = TrainConfig(**{k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__})
        cfg = dataclasses.replace(cfg, **overrides)
        return _fit(cfg, data if data is not None else cfg.data, run_path=run, resume=True)
    cfg = dataclasses.replace(config or TrainConfig(), **overrides)
    if backbone is not None:
        cfg.backbone = backbone
    if data is None:
        data = cfg.data
    if not data:
        raise ZooError("no data given: pass a folder of images (root/<class>/*.jpg) or a dataset name")
    cfg.data = data if isinstance(data, str) else str(Path(data)) if isinstance(data, Path) else cfg.data or "<object>"
    return _fit(cfg, data, run_path=Path(cfg.out_dir) / _run_name(cfg), resume=False)


def _check_config(cfg: TrainConfig) -> None:
    """Reject option values that would only fail after the data and the model are loaded."""
    if cfg.optimizer not in ("adamw", "sgd"):
        raise ZooError(f"unknown optimizer {cfg.optimizer!r}; choose 'adamw' or 'sgd' (--optimizer)")
    for name in ("epochs", "batch_size", "max_steps"):
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ZooError(f"{name} must be a positive integer, got {value!r} (--{name.replace('_', '-')})")
    if isinstance(cfg.lr, str) and cfg.lr != "auto":
        try:
            cfg.lr = float(cfg.lr)
        except ValueError:
            raise ZooError(f"lr must be a number or 'auto', got {cfg.lr!r} (--lr)") from None


def _fit(cfg: TrainConfig, data: Any, *, run_path: Path, resume: bool) -> TrainResult:
    strategy = strategies.get_strategy(cfg.strategy)
    cfg.strategy = strategy.name
    _check_config(cfg)
    device = pick_device(cfg.device)
    training_precision(cfg.precision, device)  # an unknown --precision fails here, before any work
    ctx = DistContext.from_env(device.type)
    try:
        device = ctx.device(device)
        run_path = Path(str(ctx.broadcast_object(str(run_path))))  # timestamped names differ per rank: rank 0's
        return _fit_in(cfg, data, run_path, resume, strategy, device, ctx)
    finally:
        ctx.close()


def _fit_in(cfg: TrainConfig, data: Any, run_path: Path, resume: bool, strategy: strategies.Strategy,
            device: torch.device, ctx: DistContext) -> TrainResult:
    seed_everything(cfg.seed)
    quiet = not (cfg.progress and ctx.is_main)
    say = (lambda *a: None) if not ctx.is_main else (lambda msg: print(msg, file=sys.stderr, flush=True))

    # data and model
    split = zdata.load_data(data, val_fraction=cfg.val_fraction, seed=cfg.seed, download=cfg.download,
                            data_root=cfg.data_root, progress=not quiet)
    num_classes = len(split.classes)
    adapter, plugin = registry.get_adapter(cfg.backbone)
    model = create(cfg.backbone, num_classes=num_classes, weights=cfg.weights)
    ctx.sync_module(model)  # under torchrun every rank starts from rank 0's weights (random inits included)
    run = RunDir(run_path, enabled=ctx.is_main)  # only now: bad data or weights leave no empty run directory
    if ctx.rank > 0:  # own augmentation/dropout streams per rank; rank 0 keeps the single-process stream
        seed_everything(cfg.seed + 1_000_003 * ctx.rank)
    data_cfg = _data_config(adapter, cfg)
    augment = strategy.default_augment if cfg.augment is None else cfg.augment
    stages = adapter.stages(model)
    head = adapter.head_name(model)
    precision = training_precision(cfg.precision, device)
    amp, scaler = autocast_for(device, precision)
    use_cache = strategy.backbone_frozen_throughout() and not augment and cfg.cache_features
    epochs = cfg.epochs if cfg.epochs is not None else (None if use_cache else 5)
    if not use_cache:
        per_rank_batch(cfg.batch_size, ctx.world_size)  # the global batch must split evenly: fail before any work
    lr_found = None
    if cfg.lr == "auto":
        lr_found = _auto_lr(cfg, split, run, ctx, quiet, skip=use_cache and epochs is None)

    config_record = {
        "train": dataclasses.asdict(cfg), "classes": split.classes, "num_classes": num_classes,
        "data_source": split.source, "data_fingerprint": split.fingerprint, "data_summary": split.summary(),
        "skipped_files": split.skipped, "data_config": data_cfg.to_dict(), "plugin": plugin,
        "family": adapter.family, "head": head, "stages": [s for s, _ in stages], "augment": augment,
        "epochs": epochs, "lr": None if use_cache and epochs is None else cfg.resolved_lr(),  # resolved values
        "device": str(device), "precision": precision, "world_size": ctx.world_size,
        "feature_cache": use_cache, "lr_find": lr_found, "weights": cfg.weights if cfg.weights is None else str(cfg.weights),
    }
    say(f"zoo train: {cfg.backbone} [{strategy.name}] on {split.summary()} | device {device}, {precision}"
        f"{', random init (no pretrained weights)' if cfg.weights is None else ''}")
    if split.problems:
        say(f"zoo train: skipped {len(split.problems)} unusable file(s), e.g. {split.problems[0][0]}: "
            f"{split.problems[0][1]} (all listed in config.json)")

    t_start = time.perf_counter()
    if use_cache:
        history, state = _fit_head_on_features(cfg, split, model, adapter, data_cfg, head, device, ctx, amp,
                                               run, resume, epochs, config_record, quiet, say)
    else:
        history, state = _fit_end_to_end(cfg, split, model, adapter, data_cfg, stages, head, strategy,
                                         augment, device, ctx, amp, scaler, run, resume, epochs,
                                         config_record, quiet, say)
    train_seconds = time.perf_counter() - t_start
    return _finish(cfg, split, model, adapter, data_cfg, head, device, ctx, amp, run, history, state,
                   config_record, train_seconds, use_cache)


def _auto_lr(cfg: TrainConfig, split: Any, run: RunDir, ctx: DistContext, quiet: bool, skip: bool) -> dict | None:
    """Replace ``cfg.lr == "auto"`` by the LR range test's suggestion (rank 0 decides for all ranks)."""
    if skip:  # the converged head fit has no learning rate
        cfg.lr = None
        return None
    from .lrfind import lr_find

    found = None
    if ctx.is_main:
        keep = ("batch_size", "image_size", "weights", "seed", "optimizer", "momentum", "weight_decay",
                "backbone_lr_mult", "layer_decay", "trainable_stages", "augment", "device", "num_workers")
        res = lr_find(cfg.backbone, split, strategy=cfg.strategy, out=run.path, progress=not quiet,
                      num_steps=min(100, 10 * max(1, len(split.train) // cfg.batch_size)),
                      **{k: getattr(cfg, k) for k in keep})
        found = {"suggestion": res.suggestion, "plot": str(res.plot)}
    found = ctx.broadcast_object(found)
    cfg.lr = float(found["suggestion"])
    return found


def _data_config(adapter: BackboneAdapter, cfg: TrainConfig) -> DataConfig:
    weights = cfg.weights if isinstance(cfg.weights, str) and cfg.weights != "DEFAULT" and "/" not in str(cfg.weights) \
        and not str(cfg.weights).endswith((".pt", ".pth", ".safetensors")) else "DEFAULT"
    try:
        dc = adapter.data_config(cfg.backbone, weights)
    except Exception:  # noqa: BLE001 - a tag-less local checkpoint: the family's default preprocessing
        dc = adapter.data_config(cfg.backbone, "DEFAULT")
    return dc.with_image_size(cfg.image_size)


def _checkpoint_state(model: nn.Module, cfg: TrainConfig, split: Any, data_cfg: DataConfig, **extra: Any) -> dict:
    return {"model": model.state_dict(), "classes": list(split.classes), "backbone": cfg.backbone,
            "strategy": cfg.strategy, "data_config": data_cfg.to_dict(), "num_classes": len(split.classes),
            "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)), **extra}


def _epoch_loop(cfg: TrainConfig, module: nn.Module, model: nn.Module, train_loader: DataLoader,
                sampler: Any, val_loader: DataLoader, prepare: Any, amp: Any, scaler: Any, epochs: int,
                setup_epoch: Any, device: torch.device, ctx: DistContext, run: RunDir, resume: bool,
                split: Any, data_cfg: DataConfig, config_record: dict, quiet: bool, say: Any,
                head_only: str | None = None) -> tuple[list, dict]:
    """The loop shared by end-to-end training and head training on cached features.

    ``head_only`` (the head's module name; cached-feature runs): only the head changes, so ``last.pt``
    holds the head's state alone (a few KB per epoch instead of the whole backbone) together with the
    best head so far, and the full ``best.pt`` is written once, when the loop ends or stops.
    """
    part = model.get_submodule(head_only) if head_only else model  # what last.pt's "model" holds
    best_part: dict[str, torch.Tensor] | None = None  # head_only: the best epoch's head, not yet in best.pt

    def flush_best() -> None:  # head_only: the full best.pt = the frozen backbone + the best head
        nonlocal best_part
        if best_part is None:
            return
        state = dict(model.state_dict())
        state.update({f"{head_only}.{k}": v for k, v in best_part.items()})
        row = history[best["epoch"] - 1] if len(history) >= best["epoch"] else {}
        ck = _checkpoint_state(model, cfg, split, data_cfg, epoch=best["epoch"], metrics=row)
        run.save("best.pt", {**ck, "model": state})
        best_part = None

    steps_per_epoch = min(len(train_loader), cfg.max_steps or len(train_loader))
    total = steps_per_epoch * epochs
    lr_at = strategies.warmup_cosine(total, int(cfg.warmup_epochs * steps_per_epoch))
    history: list[dict[str, Any]] = []
    best = {"val_loss": math.inf, "epoch": 0}
    start_epoch, step, optimizer = 0, 0, None
    if resume:
        if not run.file("last.pt").is_file():
            raise ZooError(f"cannot resume {str(run.path)!r}: it has no last.pt (the run stopped before its "
                           "first epoch finished); start it again without --resume")
        ck = load_checkpoint(run.file("last.pt"))
        part.load_state_dict(ck["model"])
        best_part = ck.get("best_part")
        history, best, start_epoch, step = ck["history"], ck["best"], ck["epoch"], ck["step"]
        rngs = ck.get("rng_ranks")  # per-rank RNG states of a torchrun run with the same number of ranks
        torch.set_rng_state(rngs[ctx.rank] if rngs and len(rngs) == ctx.world_size else ck["rng"])
        say(f"zoo train: resuming {run.path} at epoch {start_epoch + 1}/{epochs}")
    run.write_json("config.json", config_record)
    stale = 0 if not history else len(history) - best["epoch"]
    if resume and cfg.early_stopping and stale >= cfg.early_stopping:
        say(f"zoo train: {run.path} already stopped early (no val-loss improvement for {stale} epochs)")
        flush_best()
        return history, best
    phase = None
    for epoch in range(start_epoch, epochs):
        phase, optimizer = setup_epoch(epoch, optimizer)
        # the saved optimizer state belongs to the phase of the last finished epoch; a run that would have
        # started a new phase (gradual: head → all layers) here starts it with a fresh optimizer too
        if resume and epoch == start_epoch and "optimizer" in ck and ck.get("phase", phase) == phase:
            optimizer.load_state_dict(ck["optimizer"])
        sampler.set_epoch(epoch)
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", disable=quiet, leave=False,
                   file=sys.stderr)
        try:
            train_stats, step = train_one_epoch(module, train_loader, prepare, amp, scaler, optimizer, lr_at,
                                                step, label_smoothing=cfg.label_smoothing,
                                                max_steps=cfg.max_steps, bar=bar, ctx=ctx, device=device)
        except FloatingPointError as exc:
            flush_best()
            raise _diverged(cfg, f"{exc} in epoch {epoch + 1}", best, run, config_record["precision"]) from None
        finally:
            bar.close()
        ctx.sync_module(model, buffers_only=True)  # rank 0's BatchNorm statistics: the ones checkpointed
        val = evaluate(module, val_loader, prepare, amp, num_classes=len(split.classes), ctx=ctx, device=device)
        if not math.isfinite(val["val_loss"]):
            flush_best()
            raise _diverged(cfg, f"validation loss is {val['val_loss']} after epoch {epoch + 1}", best, run,
                            config_record["precision"])
        row = {"epoch": epoch + 1, **train_stats, **val, "lr": max(g["lr"] for g in optimizer.param_groups),
               "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
        history.append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
        improved = val["val_loss"] < best["val_loss"]
        if improved:
            best = {"val_loss": val["val_loss"], "epoch": epoch + 1}
            if head_only:
                best_part = {k: v.detach().clone() for k, v in part.state_dict().items()}
            else:
                run.save("best.pt", _checkpoint_state(model, cfg, split, data_cfg, epoch=epoch + 1, metrics=row))
        stale = 0 if improved else stale + 1
        rng_ranks = {"rng_ranks": ctx.all_gather_object(torch.get_rng_state())} if ctx.enabled else {}
        extra = {"part": head_only, "best_part": best_part} if head_only else {}
        run.save("last.pt", _checkpoint_state(part, cfg, split, data_cfg, epoch=epoch + 1, step=step,
                                              optimizer=optimizer.state_dict(), history=history, best=best,
                                              rng=torch.get_rng_state(), phase=phase, **rng_ranks, **extra))
        run.write_metrics(history)
        top5 = f" top-5 {val['val_top5']:.3f}" if "val_top5" in val else ""
        say(f"epoch {epoch + 1}/{epochs}: train loss {train_stats['train_loss']:.4f} acc "
            f"{train_stats['train_acc']:.3f} | val loss {val['val_loss']:.4f} acc {val['val_acc']:.3f}{top5} | "
            f"{train_stats['images_per_s']:.0f} img/s, {train_stats['epoch_seconds']:.1f}s")
        if cfg.early_stopping and stale >= cfg.early_stopping:
            say(f"zoo train: early stop — no val-loss improvement for {stale} epochs (best epoch {best['epoch']})")
            break
    flush_best()
    return history, best


def _diverged(cfg: TrainConfig, what: str, best: dict, run: RunDir, precision: str) -> TrainingError:
    """The one-line error for a non-finite loss, saying what is kept and what to change."""
    kept = (f"the best checkpoint (epoch {best['epoch']}) is kept at {run.file('best.pt')}" if best["epoch"]
            else "no checkpoint was saved")
    fix = "Lower the learning rate (--lr)" + (" or use --precision fp32" if precision != "fp32" else "")
    return TrainingError(f"{cfg.backbone}: {what}; stopped, {kept}. {fix}.")


def _fit_end_to_end(cfg, split, model, adapter, data_cfg, stages, head, strategy, augment, device, ctx, amp,
                    scaler, run, resume, epochs, config_record, quiet, say):
    train_ds = (_eval_dataset(cfg, split, "train", data_cfg, ctx, quiet) if not augment
                else zdata.Transformed(split.train, zdata.train_transform(data_cfg, augment=True)))
    val_ds = _eval_dataset(cfg, split, "val", data_cfg, ctx, quiet)
    batch = per_rank_batch(cfg.batch_size, ctx.world_size)  # cfg.batch_size is the global batch
    config_record["batch_size_per_rank"] = batch
    sampler = _sampler(len(train_ds), cfg.seed, ctx, shuffle=True)
    train_loader = zdata.make_loader(train_ds, batch_size=batch, shuffle=False, seed=cfg.seed + 1_000_003 * ctx.rank,
                                     num_workers=cfg.num_workers, sampler=sampler, device=device)
    val_loader = zdata.make_loader(val_ds, batch_size=batch, shuffle=False, seed=cfg.seed,
                                   num_workers=cfg.num_workers, sampler=_sampler(len(val_ds), cfg.seed, ctx, False),
                                   device=device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        return zdata.normalize(x, data_cfg).contiguous(memory_format=memory_format)

    state = {"k": None, "module": model}
    n_stages = len(stages)

    def setup_epoch(epoch: int, optimizer: Any) -> tuple[int, Any]:
        k = strategy.trainable_stages(epoch, n_stages, cfg.trainable_stages, cfg.head_epochs)
        if k == state["k"] and optimizer is not None:
            return k, optimizer
        state["k"] = k
        strategies.apply_stages(model, adapter, k, n_stages)
        groups = strategies.param_groups(model, stages, head, lr=cfg.resolved_lr(), weight_decay=cfg.weight_decay,
                                         backbone_lr_mult=cfg.backbone_lr_mult, layer_decay=cfg.layer_decay)
        total, trainable = count_parameters(model)
        say(f"zoo train: epoch {epoch + 1}: {trainable:,} of {total:,} parameters train "
            f"({k}/{n_stages} backbone stages + head) in {len(groups)} optimizer groups")
        state["module"] = ctx.wrap(model, device)
        return k, strategies.make_optimizer(groups, cfg.optimizer, cfg.momentum)

    class _Module(nn.Module):  # forwards to the (possibly DDP-wrapped) model of the current phase
        def __init__(self) -> None:
            super().__init__()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # evaluation bypasses DDP: no per-batch collectives, so ranks may run unequal numbers of batches
            return state["module"](x) if self.training else model(x)

        def train(self, mode: bool = True) -> _Module:
            model.train(mode)
            self.training = mode
            return self

    return _epoch_loop(cfg, _Module(), model, train_loader, sampler, val_loader, prepare, amp, scaler, epochs,
                       setup_epoch, device, ctx, run, resume, split, data_cfg, config_record, quiet, say)


def _sampler(n: int, seed: int, ctx: DistContext, shuffle: bool) -> Any:
    if ctx.enabled and shuffle:  # rank r gets perm[r::W]: together the same global batches as one process
        return DistributedEpochSampler(n, num_replicas=ctx.world_size, rank=ctx.rank, seed=seed)
    if ctx.enabled:  # evaluation: every item exactly once over all ranks (no padding), so sums are exact
        return ShardSampler(n, ctx.rank, ctx.world_size)
    return EpochSampler(n, seed, shuffle=shuffle)


def _fit_head_on_features(cfg, split, model, adapter, data_cfg, head, device, ctx, amp, run, resume, epochs,
                          config_record, quiet, say):
    strategies.apply_stages(model, adapter, 0, len(adapter.stages(model)))  # the backbone never trains here
    fx = _extract_both(cfg, split, model, adapter, data_cfg, device, quiet, ctx)  # sharded under torchrun
    config_record["feature_cache_hit"] = fx["train"].from_cache and fx["val"].from_cache
    head_module = model.get_submodule(head)
    total, trainable = count_parameters(head_module)
    say(f"zoo train: features {tuple(fx['train'].features.shape)} "
        f"({'from cache' if config_record['feature_cache_hit'] else 'extracted'}); "
        f"{trainable:,} of {count_parameters(model)[0]:,} parameters train (the head)")
    head_module.to(device)
    if epochs is None:  # converged L-BFGS logistic regression with its L2 picked on an inner split
        from .headfit import fit_linear_head

        fit = fit_linear_head(fx["train"].features, fx["train"].labels, len(split.classes), seed=cfg.seed,
                              label_smoothing=cfg.label_smoothing)
        with torch.no_grad():
            head_module.weight.copy_(fit.weight)
            head_module.bias.copy_(fit.bias)
        ctx.sync_module(head_module)  # the fit runs identically on every rank; make it bit-identical
        config_record["head_fit"] = fit.config()
        if not (torch.isfinite(fit.weight).all() and torch.isfinite(fit.bias).all()):
            raise TrainingError(f"{cfg.backbone}: the converged head fit gave non-finite weights (the features "
                                "hold NaN/inf); no checkpoint was saved. Use --precision fp32 or other weights.")
        say(f"zoo train: converged head fit (L-BFGS, l2={fit.l2:g}, {fit.iterations} iterations, "
            f"{fit.seconds:.1f}s)")
        loaders = {s: DataLoader(TensorDataset(fx[s].features, fx[s].labels), batch_size=1024) for s in fx}
        ev = {s: evaluate(head_module, loaders[s], lambda x: x.to(device), contextlib.nullcontext,
                          num_classes=len(split.classes), ctx=DistContext(), device=device) for s in fx}
        row = {"epoch": 1, "train_loss": ev["train"]["val_loss"], "train_acc": ev["train"]["val_acc"],
               **ev["val"], "images_per_s": None, "epoch_seconds": round(fit.seconds, 4), "lr": None,
               "trainable_params": trainable}
        history = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}]
        run.write_json("config.json", config_record)
        run.save("best.pt", _checkpoint_state(model, cfg, split, data_cfg, epoch=1, metrics=row))
        run.write_metrics(history)
        say(f"zoo train: val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}")
        return history, {"val_loss": row["val_loss"], "epoch": 1}

    train_ds = TensorDataset(fx["train"].features, fx["train"].labels)
    val_ds = TensorDataset(fx["val"].features, fx["val"].labels)
    sampler = EpochSampler(len(train_ds), cfg.seed, shuffle=True)
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler)
    val_loader = DataLoader(val_ds, batch_size=max(cfg.batch_size, 256))

    def setup_epoch(epoch: int, optimizer: Any) -> tuple[str, Any]:
        if optimizer is not None:
            return "head", optimizer
        groups = strategies.param_groups(head_module, [], "", lr=cfg.resolved_lr(),
                                         weight_decay=cfg.weight_decay, backbone_lr_mult=0, layer_decay=1)
        return "head", strategies.make_optimizer(groups, cfg.optimizer, cfg.momentum)

    return _epoch_loop(cfg, head_module, model, train_loader, sampler, val_loader, lambda x: x.to(device),
                       contextlib.nullcontext, None, epochs, setup_epoch, device, DistContext(), run, resume,
                       split, data_cfg, config_record, quiet, say, head_only=head)


def _shared_pixels(cfg: TrainConfig, split: Any, name: str, data_cfg: DataConfig, ctx: DistContext | None,
                   quiet: bool) -> Any:
    """The ``name`` split's decoded pixels from the shared cache when ``cfg.share_decoding``, else None."""
    if not cfg.share_decoding or (ctx is not None and ctx.enabled):
        return None
    from .cache import PixelCache

    return PixelCache.build(getattr(split, name), data_cfg, fingerprint=split.fingerprint, split=name,
                            num_workers=cfg.num_workers, progress=not quiet)


def _eval_dataset(cfg: TrainConfig, split: Any, name: str, data_cfg: DataConfig, ctx: DistContext,
                  quiet: bool) -> Any:
    """Items ``(eval_transform(image) uint8, label)`` of a split: from the shared pixel cache, or decoded."""
    pixels = _shared_pixels(cfg, split, name, data_cfg, ctx, quiet)
    if pixels is not None:
        return pixels.as_dataset()
    return zdata.Transformed(getattr(split, name), zdata.eval_transform(data_cfg))


def _extract_both(cfg, split, model, adapter, data_cfg, device, quiet, ctx: DistContext | None = None) -> dict:
    from . import cache

    out = {}
    for name, ds in (("train", split.train), ("val", split.val)):
        key = cache.feature_key(backbone=cfg.backbone, weights=str(cfg.weights), data_config=data_cfg,
                                fingerprint=split.fingerprint, split=name,
                                precision=resolve_precision(cfg.precision, device))
        cached = (cache.cache_root() / "features" / key).is_dir()  # then no pixels are needed
        pixels = None if cached else _shared_pixels(cfg, split, name, data_cfg, ctx, quiet)
        out[name] = cache.extract_features(model, adapter, ds, data_cfg, key=key, batch_size=cfg.batch_size,
                                           device=device, precision=cfg.precision, pixels=pixels,
                                           num_workers=cfg.num_workers, progress=not quiet, ctx=ctx)
    return out


def _finish(cfg, split, model, adapter, data_cfg, head, device, ctx, amp, run, history, best, config_record,
            train_seconds, use_cache) -> TrainResult:
    """Reload the best weights, write summary, per-class table and plots."""
    if ctx.is_main and run.file("best.pt").is_file():
        model.load_state_dict(load_checkpoint(run.file("best.pt"))["model"])
    model.to(device).eval()
    ctx.sync_module(model)  # every rank evaluates rank 0's best weights
    n = len(split.classes)
    if use_cache:  # rank 0 reads the cached validation features; the other ranks get its matrix
        matrix = None
        if ctx.is_main:
            fv = _extract_both(cfg, split, model, adapter, data_cfg, device, True)["val"]
            head_module = model.get_submodule(head)
            with torch.no_grad():
                logits = head_module(fv.features.to(device)).float()
            matrix = confusion(logits.argmax(1).cpu(), fv.labels.cpu(), n)
        matrix = ctx.broadcast_object(matrix)
    else:  # each rank evaluates its unpadded shard of the validation set; the counts are summed
        val_ds = _eval_dataset(cfg, split, "val", data_cfg, ctx, True)
        loader = zdata.make_loader(val_ds, batch_size=max(1, cfg.batch_size // ctx.world_size), shuffle=False,
                                   seed=cfg.seed, num_workers=cfg.num_workers, device=device,
                                   sampler=_sampler(len(val_ds), cfg.seed, ctx, False))
        ev = evaluate(model, loader, lambda x: zdata.normalize(x.to(device), data_cfg), amp, num_classes=n,
                      ctx=DistContext(), device=device, want_preds=True)
        matrix = confusion(ev["preds"], ev["targets"], n)
        if ctx.enabled:
            flat = ctx.sum([float(v) for row in matrix for v in row])
            matrix = [[int(flat[i * n + j]) for j in range(n)] for i in range(n)]
    table = per_class_table(matrix, split.classes)
    best_row = next((r for r in history if r["epoch"] == best["epoch"]), history[-1] if history else {})
    metrics = {k: best_row.get(k) for k in ("val_loss", "val_acc", "val_top5", "train_loss", "train_acc")
               if best_row.get(k) is not None}
    total, trainable = count_parameters(model)
    trainable = max((r.get("trainable_params", 0) for r in history), default=trainable)
    result = TrainResult(run_dir=run.path, backbone=cfg.backbone, strategy=cfg.strategy, classes=list(split.classes),
                         history=history, best_epoch=best["epoch"], metrics=metrics, total_params=total,
                         trainable_params=trainable, train_seconds=train_seconds, config=config_record)
    if ctx.is_main:
        run.write_table("per_class.csv", table)
        run.write_json("summary.json", {
            "backbone": cfg.backbone, "strategy": cfg.strategy, "best_epoch": best["epoch"], "metrics": metrics,
            "epochs_run": len(history), "total_params": total, "trainable_params": trainable,
            "train_seconds": round(train_seconds, 3), "per_class": table, "confusion_matrix": matrix,
            "classes": split.classes, "random_init": cfg.weights is None})
        title = f"{cfg.backbone} [{cfg.strategy}]"
        plots.learning_curves(history, run.file("curves.png"), title)
        plots.confusion_matrix(matrix, split.classes, run.file("confusion.png"), f"{title} — validation")
        print(f"zoo train: done. {result.summary()}", file=sys.stderr, flush=True)
    return result
