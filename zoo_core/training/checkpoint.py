"""A run's checkpoints: ``best.pt`` (inference) and ``last.pt`` (``--resume``), dicts with explicit keys.

Every checkpoint holds ``model`` (a state dict), ``classes``, ``backbone``, ``strategy``, ``data_config``,
``num_classes`` and ``config``. ``best.pt`` adds ``epoch`` and ``metrics`` (the best epoch's row).
``last.pt`` adds ``epoch`` (epochs finished), ``end`` (the planned last epoch), ``step``, ``optimizer``, ``history``, ``best``, ``phase``
(what the strategy trained in that epoch), ``rng`` (the torch RNG state) and, under torchrun,
``rng_ranks`` (every rank's). A run on cached features changes only its head, so its ``last.pt`` holds
the head alone (``part``: the head's module name; ``best_part``: the best head not yet in ``best.pt``)
and the full ``best.pt`` is written once, when the loop ends or stops (:meth:`Checkpoints.flush_best`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..distributed import DistContext
from ..errors import ZooError
from ..rundir import load_checkpoint
from ..util import few
from .resume import last_checkpoint
from .setup import RunState


def checkpoint(state: RunState, model_state: dict[str, torch.Tensor], **extra: Any) -> dict[str, Any]:
    """The keys every checkpoint of the run holds, with ``model_state`` and ``extra``."""
    cfg = state.cfg
    return {"model": model_state, "classes": list(state.split.classes), "backbone": cfg.backbone,
            "strategy": cfg.strategy, "data_config": state.data_cfg.to_dict(), "num_classes": state.num_classes,
            "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)), **extra}


def _new_best() -> dict[str, Any]:
    return {"val_loss": math.inf, "epoch": 0}


@dataclass
class Resume:
    """Where the epoch loop starts: epoch 0, or the state saved in ``last.pt``."""

    epoch: int = 0  # epochs already finished
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=_new_best)  # {"val_loss", "epoch"}
    optimizer: dict[str, Any] | None = None
    phase: Any = None
    phase_saved: bool = False
    end: int | None = None  # the run's last epoch as planned after the saved one (a grown budget)

    def restore_optimizer(self, optimizer: torch.optim.Optimizer, phase: Any) -> None:
        """Load the saved optimizer state when ``phase`` is the saved one.

        The saved state belongs to the phase of the last finished epoch; a run that would have started a
        new phase (gradual: head → all layers) here starts it with a fresh optimizer too. The moments come
        from the checkpoint, the hyperparameters (``initial_lr``, weight decay, …) from ``optimizer``, which
        the config built: identical unless the resume changed ``--lr``, and then the new one holds."""
        if self.optimizer is not None and (not self.phase_saved or self.phase == phase):
            hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
            optimizer.load_state_dict(self.optimizer)
            for group, own in zip(optimizer.param_groups, hyper):
                group.update(own)


def rng_states(ctx: DistContext) -> dict[str, Any]:
    """``rng`` (this process's torch RNG state) and, under torchrun, ``rng_ranks`` (every rank's, in rank
    order; a collective, so every rank calls it)."""
    ranks = {"rng_ranks": ctx.all_gather_object(torch.get_rng_state())} if ctx.enabled else {}
    return {"rng": torch.get_rng_state(), **ranks}


def restore_rng(ck: dict[str, Any], ctx: DistContext) -> None:
    """Put back this rank's RNG state: its own when the run had as many ranks, else rank 0's."""
    rngs = ck.get("rng_ranks")
    torch.set_rng_state(rngs[ctx.rank] if rngs and len(rngs) == ctx.world_size else ck["rng"])


class Checkpoints:
    """Writes ``best.pt`` and ``last.pt`` of the model being trained and resumes from ``last.pt``.

    ``head`` (the head's module name, cached-feature runs): ``last.pt`` holds the head alone and the
    best head waits in memory (and in ``last.pt``) until :meth:`flush_best` writes the full ``best.pt``.
    """

    def __init__(self, state: RunState, model: nn.Module, head: str | None, ctx: DistContext) -> None:
        self.state, self.model, self.head, self.ctx = state, model, head, ctx
        self.part = model.get_submodule(head) if head else model  # what last.pt's "model" holds
        self.best_part: dict[str, torch.Tensor] | None = None  # head only: the best head, not yet in best.pt
        self.run = state.run

    def resume(self) -> Resume:
        """Load ``last.pt`` into the model and the RNG; the loop's starting point."""
        ck = load_checkpoint(last_checkpoint(self.run.path))
        self._check_data(ck)
        self.part.load_state_dict(ck["model"])
        self.best_part = ck.get("best_part")
        restore_rng(ck, self.ctx)
        return Resume(epoch=ck["epoch"], step=ck["step"], history=ck["history"], best=ck["best"],
                      optimizer=ck.get("optimizer"), phase=ck.get("phase"), phase_saved="phase" in ck,
                      end=ck.get("end"))

    def _check_data(self, ck: dict[str, Any]) -> None:
        """Refuse to continue on other data: other classes, or images added, removed or relabelled."""
        split, where = self.state.split, str(self.run.path)
        if list(ck["classes"]) != list(split.classes):
            raise ZooError(f"cannot resume {where!r} on {split.source!r}: its classes ({few(split.classes)}) are "
                           f"not the run's ({few(ck['classes'])}); start a new run for this data")
        saved = self.run.read_json("config.json").get("data_fingerprint")
        if saved is not None and saved != split.fingerprint:
            raise ZooError(f"cannot resume {where!r} on {split.source!r}: the data changed since the run started "
                           "(images added, removed or relabelled); start a new run for this data")

    def improved(self, epoch: int, row: dict[str, Any]) -> None:
        """Epoch ``epoch`` (1-based) is the best so far: save ``best.pt`` (or, head only, keep the head)."""
        if self.head:
            self.best_part = {k: v.detach().clone() for k, v in self.part.state_dict().items()}
        else:
            self.run.save("best.pt", checkpoint(self.state, self.model.state_dict(), epoch=epoch, metrics=row))

    def save_last(self, *, epoch: int, step: int, optimizer: torch.optim.Optimizer, history: list[dict[str, Any]],
                  best: dict[str, Any], phase: Any, end: int | None = None) -> None:
        """Save ``last.pt`` after epoch ``epoch`` (1-based) with ``end``, the planned last epoch; every rank
        calls it (the RNG gather)."""
        extra = {"part": self.head, "best_part": self.best_part} if self.head else {}
        self.run.save("last.pt", checkpoint(self.state, self.part.state_dict(), epoch=epoch, step=step,
                                            optimizer=optimizer.state_dict(), history=history, best=best,
                                            phase=phase, end=end, **rng_states(self.ctx), **extra))

    def flush_best(self, history: list[dict[str, Any]], best: dict[str, Any]) -> None:
        """Head only: write the full ``best.pt`` = the frozen backbone + the best head (no-op otherwise)."""
        if self.best_part is None:
            return
        weights = dict(self.model.state_dict())
        weights.update({f"{self.head}.{k}": v for k, v in self.best_part.items()})
        row = history[best["epoch"] - 1] if len(history) >= best["epoch"] else {}
        self.run.save("best.pt", checkpoint(self.state, weights, epoch=best["epoch"], metrics=row))
        self.best_part = None


def restore_best(state: RunState) -> None:
    """Load ``best.pt`` into the model (rank 0 reads it; every rank gets its weights) for the final report."""
    best = state.run.file("best.pt")
    if state.ctx.is_main and best.is_file():
        state.model.load_state_dict(load_checkpoint(best)["model"])
    state.model.to(state.device).eval()
    state.ctx.sync_module(state.model)  # every rank evaluates rank 0's best weights
