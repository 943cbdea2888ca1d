"""How the backbone runs during extraction: the model preparation and the candidate forward passes.

A :class:`ForwardPass` turns a prepared (normalised, channels-last) batch into float32 features. Today
the passes are eager ones per precision (:func:`eager_pass`); :func:`candidate_passes` lists them,
preferred first, with eager fp32 last, and :func:`choose_pass` keeps the first whose features on the
first batch pass :func:`zoo_core.runtime.check_pass` against eager fp32.

Adding a pass mode (BatchNorm folding, ``torch.compile``, int8): write a builder
``(model, adapter, device, precision) -> ForwardPass`` that prepares its own model (leaving the
caller's untouched) and put it into :func:`candidate_passes` ahead of the eager passes; the check
against eager fp32 and the fallback come for free.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from .. import runtime
from ..adapter import BackboneAdapter
from ..distributed import DistContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForwardPass:
    """One way to run the backbone: ``run(x)`` → float32 features ``[B, D]`` of a prepared batch."""

    name: str  # what log messages call it: "fp32", "bf16", …
    precision: str  # the resolved precision it computes in (stored in meta.json)
    run: Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def inference_setup(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode + channels-last weights for the duration; the model's mode and layout are restored."""
    was_training = model.training
    four_d = [p for p in model.parameters() if p.dim() == 4]
    was_cl = bool(four_d) and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)
    model.to(device)
    model.eval()
    if four_d and not was_cl:
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if four_d and not was_cl:
            model.to(memory_format=torch.contiguous_format)
        model.train(was_training)


def eager_pass(model: nn.Module, adapter: BackboneAdapter, device: torch.device, precision: str) -> ForwardPass:
    """The model as it is, under ``torch.inference_mode`` and autocast to ``precision``."""
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), runtime.autocast(device, precision):
            return adapter.features(model, x).float()

    return ForwardPass(precision, precision, run)


def candidate_passes(model: nn.Module, adapter: BackboneAdapter, device: torch.device,
                     precision: str) -> list[ForwardPass]:
    """The passes to try for ``precision``, preferred first (see :func:`runtime.precision_candidates`).

    Every pass but the last is checked on the first batch; with several, the last is eager fp32, the
    reference they are checked against and the fallback.
    """
    return [eager_pass(model, adapter, device, p) for p in runtime.precision_candidates(precision, device)]


def choose_pass(passes: list[ForwardPass], x: torch.Tensor | None, ctx: DistContext,
                requested: str) -> tuple[ForwardPass, torch.Tensor | None]:
    """The pass to use and, when computed on the way, its features of the first batch ``x``.

    With one candidate it is used unchecked. Otherwise each earlier candidate is checked against the
    last (eager fp32) on ``x`` and the first accepted wins; a rank without a batch (``x=None``) accepts
    the first. Every rank of ``ctx`` gets the same pass: the latest of the ranks' choices.
    """
    if len(passes) == 1:
        return passes[0], None
    computed: dict[int, torch.Tensor] = {}
    choice = 0
    if x is not None:
        choice = last = len(passes) - 1
        computed[last] = exact = passes[last].run(x)
        for i, p in enumerate(passes[:last]):
            computed[i] = p.run(x)
            verdict = runtime.check_pass(computed[i], exact, p.name)
            if verdict.accepted:
                log.info("precision %s: %s", requested, verdict.message)
                choice = i
                break
            log.warning("precision %s: %s; using %s", requested, verdict.message, passes[i + 1].name)
    agreed = ctx.max_int(choice)
    if agreed != choice:
        log.info("precision %s: another rank rejected %s; using %s", requested, passes[choice].name,
                 passes[agreed].name)
    return passes[agreed], computed.get(agreed)
