"""One training epoch and one evaluation pass, shared by every path of a run.

Seams: the epoch loop, the cached-feature path and the final report call these through the module
(``steps.train_one_epoch(...)``, ``steps.evaluate(...)``), so a test may replace either with
``monkeypatch.setattr(steps, "train_one_epoch", ...)`` to interrupt, poison or inspect a run.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import strategies
from ..distributed import DistContext


def topk_correct(logits: torch.Tensor, target: torch.Tensor, k: int) -> int:
    """Number of rows whose target is among the ``k`` highest logits."""
    k = min(k, logits.shape[1])
    return int((logits.topk(k, dim=1).indices == target[:, None]).any(dim=1).sum())


@torch.no_grad()
def evaluate(module: nn.Module, loader: DataLoader, prepare: Callable[[torch.Tensor], torch.Tensor], amp: Any, *,
             num_classes: int, ctx: DistContext, device: torch.device, want_preds: bool = False) -> dict[str, Any]:
    """Validation loss, top-1/top-5 (and, ``want_preds``, per-item probabilities, predictions and targets)
    of ``module``; restores its train/eval mode."""
    was_training = module.training
    module.eval()
    loss_sum = correct = correct5 = n = 0.0
    probs, targets = [], []
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
            probs.append(logits.softmax(1).cpu())
            targets.append(y.cpu())
    module.train(was_training)
    loss_sum, correct, correct5, n = ctx.sum([loss_sum, correct, correct5, n], device)
    out: dict[str, Any] = {"val_loss": loss_sum / max(n, 1), "val_acc": correct / max(n, 1)}
    if num_classes >= 5:
        out["val_top5"] = correct5 / max(n, 1)
    if want_preds:  # per item of the loader: softmax probabilities, their argmax and the targets
        out["probs"] = torch.cat(probs) if probs else torch.empty(0, num_classes)
        out["preds"] = out["probs"].argmax(1)
        out["targets"] = torch.cat(targets) if targets else torch.empty(0, dtype=torch.long)
    return out


def train_one_epoch(module: nn.Module, loader: DataLoader, prepare: Callable[[torch.Tensor], torch.Tensor],
                    amp: Any, scaler: Any, optimizer: torch.optim.Optimizer, lr_at: Callable[[int], float],
                    step: int, *, label_smoothing: float, max_steps: int | None, bar: Any, ctx: DistContext,
                    device: torch.device) -> tuple[dict, int]:
    """One pass over ``loader``; returns (train metrics, global step after the epoch).

    Raises FloatingPointError on a non-finite loss (the loop turns it into a TrainingError)."""
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
