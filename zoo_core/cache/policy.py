"""The pass policy: which forward passes feature extraction tries, and how a faster one earns its place.

A faster inference pass is never trusted blindly. :func:`precision_candidates` lists what a requested
precision tries (``auto``: the resolved low precision first, fp32 as the fallback); :func:`pass_candidates`
adds the pass modes (:data:`~zoo_core.cache.passes.PASS_MODES`): each precision BatchNorm-folded, eager last,
and for ``auto`` on a CPU with enough images (:data:`ONNX_MIN_IMAGES`, :func:`onnx_pays_back`) the backbone
in ONNX Runtime, int8 first and fp32 before the first fp32 pass; ``$BACKBONE_ZOO_PASS`` (:data:`PASS_ENV`)
pins one mode. :func:`pass_modes` is what a feature cache key records of that.

:func:`candidate_passes` builds those passes, and :func:`choose_pass` keeps the first whose features on the
first batch pass :func:`.criterion.check_pass` against eager fp32 (what the head needs: the error in units of
the between-image spread of each feature); one that raises is dropped with its reason, and every verdict is
recorded for ``meta.json``. :func:`choose_pass_once` remembers that verdict per model and weights, so the next
split (or the augmentation check's views) of the same backbone skips the check and its extra passes.
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from typing import Any

import torch
from torch import nn

from .. import onnxgraph, runtime
from ..backbones.adapter import BackboneAdapter
from ..distributed import DistContext
from ..errors import ZooError
from . import criterion, onnxrt
from .passes import BUILDERS, FOLD, INT8, ONNX, PASS_MODES, SHARE_GRAPH, ForwardPass

log = logging.getLogger(__name__)

PASS_ENV = "BACKBONE_ZOO_PASS"
"""Environment variable that pins the pass mode: ``auto`` (the default policy) or one of
:data:`~zoo_core.cache.passes.PASS_MODES`."""

ONNX_MIN_IMAGES = {"fp32": 1000, "bf16": 2500}
"""Images from which ``auto`` tries the ONNX Runtime passes (int8, then fp32), per resolved float precision.

Their setup (export to ONNX, calibration and quantization, sessions: 7–10 s for a ResNet-18 on 2 cores)
pays back from about 450 images against the folded fp32 pass and about 1,300 against folded bf16 (int8
runs 3.7× and 1.9× as fast there; README "Performance", ``benchmarks/pass_modes.py``); the thresholds
leave a margin of about two.
"""


def precision_candidates(precision: str, device: str | torch.device) -> list[str]:
    """Precisions to try, preferred first; every one but the last is checked against fp32 first.

    ``auto`` that resolves to a low precision gives ``[that, "fp32"]`` (fp32 is the fallback when the
    check fails); ``auto`` that resolves to fp32, and any explicit precision, give just that one.
    """
    resolved = runtime.resolve_precision(precision, device)
    if runtime.is_auto(precision) and resolved != "fp32":
        return [resolved, "fp32"]
    return [resolved]


def pinned_pass() -> str | None:
    """The pass mode ``$BACKBONE_ZOO_PASS`` pins, or None for the automatic policy (unset, empty, ``auto``)."""
    value = os.environ.get(PASS_ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in PASS_MODES:
        raise ZooError(f"{PASS_ENV}={value!r} is not a pass mode; use auto, {', '.join(PASS_MODES)}")
    return value


def onnx_pays_back(precision: str, device: str | torch.device, n_images: int | None) -> bool:
    """Whether ``auto`` tries the ONNX Runtime passes for ``n_images`` images on ``device`` (CPU only).

    Only for ``precision="auto"``, with the packages installed (:data:`~zoo_core.cache.onnxrt.INT8_PACKAGES`)
    and at least :data:`ONNX_MIN_IMAGES` images for the precision ``auto`` resolves to.
    """
    if not runtime.is_auto(precision) or torch.device(device).type != "cpu":
        return False
    resolved = runtime.resolve_precision(precision, device)
    if n_images is None or n_images < ONNX_MIN_IMAGES.get(resolved, sys.maxsize):
        return False
    return not onnxgraph.missing_packages(onnxrt.INT8_PACKAGES)


def pass_candidates(precision: str, device: str | torch.device,
                    n_images: int | None = None) -> list[tuple[str, str]]:
    """``(pass mode, precision)`` pairs to try, preferred first; the last is eager and the check's reference.

    Each precision of :func:`precision_candidates` is tried BatchNorm-folded first (no native bf16:
    ``[(bnfold, fp32), (eager, fp32)]``; native bf16: ``[(bnfold, bf16), (bnfold, fp32), (eager, fp32)]``);
    explicit precisions get ``[(bnfold, P), (eager, P)]``. ``auto`` on a CPU puts ``(int8, int8)`` first
    and ``(onnx, fp32)`` before the first fp32 pass when :func:`onnx_pays_back` for ``n_images``.
    ``$BACKBONE_ZOO_PASS`` pins one mode, tried (regardless of size and precision) before the eager
    reference: ``int8``, ``onnx``, ``bnfold`` (each precision) or ``eager`` (the reference alone).
    """
    precisions = precision_candidates(precision, device)
    reference = ("eager", precisions[-1])
    folded = [(FOLD, p) for p in precisions]
    pinned = pinned_pass()
    if pinned is not None:
        return {INT8: [(INT8, INT8)], ONNX: [(ONNX, "fp32")], FOLD: folded, "eager": []}[pinned] + [reference]
    if not onnx_pays_back(precision, device, n_images):
        return folded + [reference]
    first_fp32 = precisions.index("fp32") if "fp32" in precisions else len(precisions)
    return [(INT8, INT8)] + folded[:first_fp32] + [(ONNX, "fp32")] + folded[first_fp32:] + [reference]


def pass_modes(precision: str, device: str | torch.device, n_images: int | None = None) -> tuple[str, ...]:
    """The pass modes :func:`pass_candidates` tries, in order, once each: what a feature cache key records."""
    return tuple(dict.fromkeys(mode for mode, _ in pass_candidates(precision, device, n_images)))


def candidate_passes(model: nn.Module, adapter: BackboneAdapter, device: torch.device,
                     precision: str, n_images: int | None = None) -> list[ForwardPass]:
    """The passes to try for ``precision`` and ``n_images`` images, preferred first (see
    :func:`pass_candidates`).

    Every pass but the last is checked on the first batch against the last (eager, in the last
    candidate precision: fp32 for ``auto``), the reference and the fallback.
    """
    graph = onnxrt.OnnxGraph(model, adapter)  # exported at most once, only if an ONNX Runtime pass runs
    return [BUILDERS[mode](model, adapter, device, p, **({"graph": graph} if mode in SHARE_GRAPH else {}))
            for mode, p in pass_candidates(precision, device, n_images)]


def choose_pass(passes: list[ForwardPass], x: torch.Tensor | None, ctx: DistContext,
                requested: str, checks: list[dict[str, Any]] | None = None) -> tuple[ForwardPass, torch.Tensor | None]:
    """The pass to use and, when computed on the way, its features of the first batch ``x``.

    With one candidate it is used unchecked. Otherwise each earlier candidate is checked against the
    last (eager fp32) on ``x`` and the first accepted wins (one that raises is dropped with a warning); a
    rank without a batch (``x=None``) accepts the first. Every rank of ``ctx`` gets the same pass: the
    latest of the ranks' choices. ``checks`` collects each verdict's :meth:`~.criterion.PassCheck.record`.
    """
    if len(passes) == 1:
        return passes[0], None
    computed: dict[int, torch.Tensor] = {}
    choice = 0
    if x is not None:
        choice = last = len(passes) - 1
        computed[last] = exact = passes[last].run(x)
        for i, p in enumerate(passes[:last]):
            try:
                computed[i] = p.run(x)
            except Exception as exc:  # noqa: BLE001 - a faster pass that cannot run is dropped, never fatal
                log.warning("precision %s: %s pass failed (%s); using %s", requested, p.name, _reason(exc),
                            passes[i + 1].name)
                continue
            verdict = criterion.check_pass(computed[i], exact, p.name)
            if checks is not None:
                checks.append(verdict.record(p.name))
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


_VERDICTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, ...], tuple[str, list[dict[str, Any]]]]] = \
    weakref.WeakKeyDictionary()


def choose_pass_once(model: nn.Module, state: str, passes: list[ForwardPass], x: torch.Tensor | None,
                     ctx: DistContext, requested: str,
                     checks: list[dict[str, Any]] | None = None) -> tuple[ForwardPass, torch.Tensor | None]:
    """:func:`choose_pass`, checked once per ``model`` object and ``state`` (its weights' fingerprint and
    the device; ``""``: always check): a later call with the same candidates takes the pass chosen then
    (and gets that check's records in ``checks``).

    Every rank makes the same calls in the same order, so the ranks skip the check together.
    """
    key = (state, requested, *(p.name for p in passes))
    if state and key in _VERDICTS.get(model, {}):
        name, records = _VERDICTS[model][key]
        chosen = next(p for p in passes if p.name == name)
        log.debug("precision %s: %s, as chosen on an earlier split of this model", requested, name)
        if checks is not None:
            checks.extend(records)
        return chosen, None
    records: list[dict[str, Any]] = []
    fwd, f0 = choose_pass(passes, x, ctx, requested, records)
    if state:
        _VERDICTS.setdefault(model, {})[key] = (fwd.name, records)
    if checks is not None:
        checks.extend(records)
    return fwd, f0


def _reason(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause of ``exc``, for a one-line log message."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0][:200] if lines else 'no message'}"
