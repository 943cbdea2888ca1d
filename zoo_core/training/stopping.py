"""Early stopping and the epoch budget of a run.

Patience counts from the run's *own* best epoch: a fine-tune that starts from the linear probe (epoch 0,
``best.pt`` until an epoch beats it) is not stopped while its validation loss still falls, even when it has
not yet reached the probe's. Without ``--epochs`` the budget (:data:`~zoo_core.training.config.DEFAULT_EPOCHS`)
grows by the patience whenever its last epoch was still the run's best, up to :data:`BUDGET_CAP` times the
budget; :func:`why_stopped` is the log line that says which of these ended the run.
"""

from __future__ import annotations

from typing import Any

from .config import DEFAULT_EPOCHS, TrainConfig, patience

BUDGET_CAP = 3
"""Without ``--epochs`` a run that keeps improving is extended to at most this many times the budget."""


def own_best(history: list[dict[str, Any]]) -> int:
    """The epoch (1-based) of the lowest validation loss among the trained epochs (0 before the first)."""
    if not history:
        return 0
    return min(range(len(history)), key=lambda i: (history[i]["val_loss"], i)) + 1


def stale_epochs(history: list[dict[str, Any]]) -> int:
    """Epochs since the run's own best epoch (the probe, epoch 0, does not count)."""
    return len(history) - own_best(history) if history else 0


def should_stop(cfg: TrainConfig, stale: int) -> bool:
    """Early stopping: :func:`~zoo_core.training.config.patience` epochs without a better validation loss."""
    wait = patience(cfg)
    return bool(wait and stale >= wait)


def cap(cfg: TrainConfig) -> int:
    """The most epochs a run without ``--epochs`` may grow to."""
    return BUDGET_CAP * DEFAULT_EPOCHS if cfg.epochs is None else cfg.epochs


def extended_end(cfg: TrainConfig, history: list[dict[str, Any]], end: int) -> int:
    """The run's last epoch after ``history``: ``end``, or, without ``--epochs``, ``end`` + the patience when
    the budget is spent and its last epoch is still the run's best (at most :func:`cap`)."""
    wait = patience(cfg)
    if cfg.epochs is not None or not wait or len(history) < end or stale_epochs(history) != 0:
        return end
    return min(end + wait, cap(cfg))


def why_stopped(cfg: TrainConfig, history: list[dict[str, Any]], best: dict[str, Any], end: int) -> str:
    """One line: why the run ended after ``history`` (planned end ``end``) and which epoch it keeps."""
    n, own = len(history), own_best(history)
    kept = (f"keeping the linear probe (epoch 0, val loss {best['val_loss']:.4f}): no trained epoch beat it"
            if best["epoch"] == 0 and history else f"keeping epoch {best['epoch']}")
    if should_stop(cfg, stale_epochs(history)):
        return (f"early stop after epoch {n}: no val-loss improvement for {stale_epochs(history)} epochs since epoch "
                f"{own} (patience {patience(cfg)}); {kept}")
    if cfg.epochs is None and n >= cap(cfg) and stale_epochs(history) == 0:
        return (f"stopped at the cap of {n} epochs ({BUDGET_CAP}x the {DEFAULT_EPOCHS}-epoch budget) with the val "
                f"loss still falling; pass --epochs to train longer; {kept}")
    budget = "the epochs --epochs set" if cfg.epochs is not None else f"the {end}-epoch budget"
    return f"finished {budget}; {kept}"
