"""The pass policy: which forward passes feature extraction tries, and how a faster one earns its place.

A faster inference pass is never trusted blindly. :func:`precision_candidates` lists what a requested
precision tries (``auto``: the resolved low precision first, fp32 as the fallback); :func:`pass_candidates`
adds the pass modes (:data:`~zoo_core.cache.passes.PASS_MODES`): each precision BatchNorm-folded (bf16,
which needs no export, first where it is native), eager last, and for ``auto`` on a CPU with enough images
to pay back the export and calibration for the backbone's size (:func:`int8_break_even`,
:func:`onnx_pays_back`) the backbone in ONNX Runtime, int8 first and fp32 before the first fp32 pass; ``$BACKBONE_ZOO_PASS`` (:data:`PASS_ENV`)
pins one mode. :func:`pass_modes` is what a feature cache key records of that.

:func:`candidate_passes` builds those passes, and :func:`choose_pass` keeps the first whose features on the
first batch pass :func:`.criterion.check_pass` against eager fp32 (what the head needs: the error in units of
the between-image spread of each feature); one that raises is dropped with its reason, and every verdict is
recorded for ``meta.json``. :func:`choose_pass_once` remembers that verdict per model and weights, so the next
split (or the augmentation check's views) of the same backbone skips the check and its extra passes.
"""

from __future__ import annotations

import logging
import math
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
from ..util import under
from . import criterion, onnxcache, onnxrt
from .passes import BUILDERS, FOLD, INT8, ONNX, PASS_MODES, SHARE_GRAPH, ForwardPass

log = logging.getLogger(__name__)

PASS_ENV = "BACKBONE_ZOO_PASS"
"""Environment variable that pins the pass mode: ``auto`` (the default policy) or one of
:data:`~zoo_core.cache.passes.PASS_MODES`."""

ONNX_SETUP_S = (4.5, 0.1e-6)
"""Seconds the ONNX Runtime int8 pass costs before its first image on 2 quiet cores: fixed + per backbone
parameter. Export, calibration, quantization and sessions took 5.6 s for ResNet-18 (11.2 M parameters)
and about as long for EfficientNet-Lite0 (3.4 M; measured loaded: 43 s against ResNet-18's 38 s): the
cost follows the graph's size more than the weights', so the per-parameter part is small (README
"Performance", ``benchmarks/pass_modes.py``)."""

INT8_SAVING_S = {"fp32": 1.33e-9, "bf16": 0.43e-9}
"""Seconds per image per backbone parameter the int8 pass saves against the pass ``auto`` runs without it
(BatchNorm-folded, per resolved float precision): ResNet-18 on 2 quiet cores, 21.0 / 10.9 ms per image
folded fp32 / bf16 against 6.1 int8. Depthwise backbones save more than their size says (EfficientNet-Lite0,
loaded: 195 / 105 against 20 ms), but their int8 features fail the pass check (README), so the rule
errs on their side by not paying for it."""

PAYBACK_MARGIN = 2.0
"""How many times its setup int8 must save over a split before ``auto`` tries it (the estimates are rough,
and a rejected int8 pass costs its setup for nothing)."""


REFERENCE_PARAMS = 11_176_512
"""The backbone size assumed when none is given: ResNet-18's (without its head)."""


def int8_break_even(n_params: int, resolved: str) -> int:
    """Images from which ``auto`` tries int8 for a backbone of ``n_params`` parameters, against the pass
    it runs otherwise in the ``resolved`` precision: :data:`PAYBACK_MARGIN` × setup / saving per image.

    Setup grows slower than the per-image saving (:data:`ONNX_SETUP_S` has a fixed part), so a large
    backbone pays back on fewer images than a small one; a precision without a measured saving never.
    """
    saving = INT8_SAVING_S.get(resolved, 0.0) * max(n_params, 1)
    if saving <= 0:
        return sys.maxsize
    fixed, per_param = ONNX_SETUP_S
    return math.ceil(PAYBACK_MARGIN * (fixed + per_param * n_params) / saving)


def backbone_params(model: nn.Module, adapter: BackboneAdapter) -> int:
    """Parameters of ``model`` outside its head: the size :func:`int8_break_even` is computed from."""
    head = adapter.head_name(model)
    return sum(p.numel() for name, p in model.named_parameters() if not (head and under(name, head)))


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


def onnx_pays_back(precision: str, device: str | torch.device, n_images: int | None,
                   n_params: int | None = None) -> bool:
    """Whether ``auto`` tries the ONNX Runtime passes for ``n_images`` images of a backbone of ``n_params``
    parameters (None: :data:`REFERENCE_PARAMS`) on ``device`` (CPU only).

    Only for ``precision="auto"``, with the packages installed (:data:`~zoo_core.cache.onnxrt.INT8_PACKAGES`)
    and at least :func:`int8_break_even` images for the precision ``auto`` resolves to.
    """
    if not runtime.is_auto(precision) or torch.device(device).type != "cpu" or n_images is None:
        return False
    resolved = runtime.resolve_precision(precision, device)
    if n_images < int8_break_even(REFERENCE_PARAMS if n_params is None else n_params, resolved):
        return False
    return not onnxgraph.missing_packages(onnxrt.INT8_PACKAGES)


def pass_candidates(precision: str, device: str | torch.device, n_images: int | None = None,
                    n_params: int | None = None) -> list[tuple[str, str]]:
    """``(pass mode, precision)`` pairs to try, preferred first; the last is eager and the check's reference.

    Each precision of :func:`precision_candidates` is tried BatchNorm-folded first (no native bf16:
    ``[(bnfold, fp32), (eager, fp32)]``; native bf16: ``[(bnfold, bf16), (bnfold, fp32), (eager, fp32)]``);
    explicit precisions get ``[(bnfold, P), (eager, P)]``. ``auto`` on a CPU puts ``(int8, int8)`` first
    and ``(onnx, fp32)`` before the first fp32 pass when :func:`onnx_pays_back` for ``n_images`` of a
    backbone of ``n_params`` parameters: below that, bf16 (no export) is first where it is native.
    ``$BACKBONE_ZOO_PASS`` pins one mode, tried (regardless of size and precision) before the eager
    reference: ``int8``, ``onnx``, ``bnfold`` (each precision) or ``eager`` (the reference alone).
    """
    precisions = precision_candidates(precision, device)
    reference = ("eager", precisions[-1])
    folded = [(FOLD, p) for p in precisions]
    pinned = pinned_pass()
    if pinned is not None:
        return {INT8: [(INT8, INT8)], ONNX: [(ONNX, "fp32")], FOLD: folded, "eager": []}[pinned] + [reference]
    if not onnx_pays_back(precision, device, n_images, n_params):
        return folded + [reference]
    first_fp32 = precisions.index("fp32") if "fp32" in precisions else len(precisions)
    return [(INT8, INT8)] + folded[:first_fp32] + [(ONNX, "fp32")] + folded[first_fp32:] + [reference]


def pass_modes(precision: str, device: str | torch.device, n_images: int | None = None,
               n_params: int | None = None) -> tuple[str, ...]:
    """The pass modes :func:`pass_candidates` tries, in order, once each: what a feature cache key records."""
    return tuple(dict.fromkeys(mode for mode, _ in pass_candidates(precision, device, n_images, n_params)))


def candidate_passes(model: nn.Module, adapter: BackboneAdapter, device: torch.device,
                     precision: str, n_images: int | None = None) -> list[ForwardPass]:
    """The passes to try for ``precision`` and ``n_images`` images of ``model``, preferred first (see
    :func:`pass_candidates`; the size is :func:`backbone_params`).

    Every pass but the last is checked on the first batch against the last (eager, in the last
    candidate precision: fp32 for ``auto``), the reference and the fallback. The ONNX Runtime passes
    share one export, kept in the export cache (:func:`.onnxcache.graph_store`) for later splits and runs.
    """
    # exported at most once (or read from the export cache), only if an ONNX Runtime pass runs
    graph = onnxrt.OnnxGraph(model, adapter, onnxcache.graph_store(model, adapter))
    return [BUILDERS[mode](model, adapter, device, p, **({"graph": graph} if mode in SHARE_GRAPH else {}))
            for mode, p in pass_candidates(precision, device, n_images, backbone_params(model, adapter))]


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
