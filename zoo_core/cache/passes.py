"""How the backbone runs during extraction: the model preparation and the candidate forward passes.

A :class:`ForwardPass` turns a prepared (normalised, channels-last) batch into float32 features. The
passes are eager ones per precision (:func:`eager_pass`), the same with BatchNorm folded into the
preceding convolutions (:func:`folded_pass`), and the backbone's features graph in ONNX Runtime, fp32
(:func:`onnx_pass`) or int8-quantized (:func:`int8_pass`, :mod:`.onnxrt`); :func:`candidate_passes`
lists the ones :func:`runtime.pass_candidates` names, preferred first, with eager fp32 last (for
``auto``), and :func:`choose_pass` keeps the first whose features on the first batch pass
:func:`.criterion.check_pass` against eager fp32 (one that raises is dropped, with its reason).
:func:`choose_pass_once` remembers that verdict per model and weights, so the next split (or the
augmentation check's views) of the same backbone skips the check and its extra passes.

Adding a pass mode (``torch.compile``, another runtime): write a builder
``(model, adapter, device, precision) -> ForwardPass`` that prepares its own model on the first batch it
runs (leaving the caller's untouched) and put it into ``_BUILDERS``, :data:`runtime.PASS_MODES` and
:func:`runtime.pass_candidates` ahead of the eager passes; the check against eager fp32 and the fallback
come for free.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .. import runtime
from ..adapter import BackboneAdapter
from ..distributed import DistContext
from . import criterion, onnxrt

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


def _conv_bn_pairs(model: nn.Module, adapter: BackboneAdapter, x: torch.Tensor) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, BatchNorm) pairs where the BatchNorm's input *is* the conv's output, seen on one probe batch.

    Only exact ``nn.Conv2d`` / ``nn.BatchNorm2d`` in eval mode with running statistics (subclasses such
    as timm's ``BatchNormAct2d`` or ``Conv2dSame`` do more than that and are left alone). A conv output
    that something else also reads would be changed by folding: :func:`.criterion.check_pass` catches it.
    """
    outputs: dict[int, nn.Conv2d] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def conv_hook(mod: nn.Module, _inp: Any, out: Any) -> None:
        outputs[id(out)] = mod  # type: ignore[assignment]

    def bn_hook(mod: nn.Module, inp: Any) -> None:
        conv = outputs.get(id(inp[0]))
        if conv is not None and all(bn is not mod for _, bn in pairs):
            pairs.append((conv, mod))  # type: ignore[arg-type]

    handles = []
    for m in model.modules():
        if type(m) is nn.Conv2d:
            handles.append(m.register_forward_hook(conv_hook))
        elif type(m) is nn.BatchNorm2d and m.track_running_stats and m.running_var is not None:
            handles.append(m.register_forward_pre_hook(bn_hook))
    try:
        with torch.inference_mode():
            adapter.features(model, x[:1])
    finally:
        for h in handles:
            h.remove()
    return pairs


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (eval-mode BatchNorm)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps) if bn.affine else torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(scale)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    return conv.weight * scale.reshape(-1, 1, 1, 1), (bias - bn.running_mean) * scale + shift


@contextlib.contextmanager
def _patched(pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]]) -> Iterator[None]:
    """Each pair's conv computes the folded convolution and its BatchNorm passes through, for the duration.

    The folded weights are computed per call (one layer's weights at a time, freed by the next), so no
    second copy of the backbone is kept and the model's own parameters are never written: after the
    block the model is bit-for-bit what it was (its checkpoint, ``best.pt``, stays the unfolded one).
    """
    def conv_forward(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: conv._conv_forward(x, *_folded(conv, bn))

    try:
        for conv, bn in pairs:
            conv.forward = conv_forward(conv, bn)  # type: ignore[method-assign]
            bn.forward = _identity  # type: ignore[method-assign]
        yield
    finally:
        for conv, bn in pairs:
            conv.__dict__.pop("forward", None)
            bn.__dict__.pop("forward", None)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def folded_pass(model: nn.Module, adapter: BackboneAdapter, device: torch.device, precision: str) -> ForwardPass:
    """Eager ``precision`` with every eval-mode BatchNorm that follows a conv folded into it (no weight copy).

    The pairs are found on the first batch it runs (:func:`_conv_bn_pairs`); without any, it is the eager
    pass. Its measured speed-up: README "Performance".
    """
    found: list[list[tuple[nn.Conv2d, nn.BatchNorm2d]]] = []

    def run(x: torch.Tensor) -> torch.Tensor:
        if not found:
            found.append(_conv_bn_pairs(model, adapter, x))
            log.debug("BatchNorm folding: %d conv+BN pairs", len(found[0]))
        with torch.inference_mode(), runtime.autocast(device, precision), _patched(found[0]):
            return adapter.features(model, x).float()

    return ForwardPass(f"{precision}+{runtime.FOLD}", precision, run)


def _session_pass(name: str, precision: str, graph: onnxrt.OnnxGraph, device: torch.device,
                  int8: bool) -> ForwardPass:
    """A pass running ``graph`` in an ONNX Runtime session made on the first batch it runs."""
    sessions: list[Any] = []

    def run(x: torch.Tensor) -> torch.Tensor:
        if not sessions:
            sessions.append(graph.session(x, int8=int8))
        return torch.from_numpy(sessions[0].run(None, {"input": onnxrt.as_input(x)})[0]).to(device)

    return ForwardPass(name, precision, run)


def onnx_pass(model: nn.Module, adapter: BackboneAdapter, device: torch.device, precision: str, *,
              graph: onnxrt.OnnxGraph | None = None) -> ForwardPass:
    """``model``'s features exported to ONNX and run in ONNX Runtime on the CPU, fp32 (:mod:`.onnxrt`).

    ``graph`` shares one export with the int8 pass; ``precision`` is not used (the graph computes in fp32).
    """
    return _session_pass(runtime.ONNX, "fp32", graph or onnxrt.OnnxGraph(model, adapter), device, int8=False)


def int8_pass(model: nn.Module, adapter: BackboneAdapter, device: torch.device, precision: str, *,
              graph: onnxrt.OnnxGraph | None = None) -> ForwardPass:
    """``model``'s features int8-quantized in ONNX Runtime on the CPU (:mod:`.onnxrt`), calibrated on the
    first batch it runs; ``graph`` shares one export with the fp32 ONNX pass, ``precision`` is not used."""
    return _session_pass(runtime.INT8, runtime.INT8, graph or onnxrt.OnnxGraph(model, adapter), device, int8=True)


_BUILDERS: dict[str, Callable[..., ForwardPass]] = {
    "eager": eager_pass, runtime.FOLD: folded_pass, runtime.ONNX: onnx_pass, runtime.INT8: int8_pass,
}  # pass mode → builder (model, adapter, device, precision) (runtime.pass_candidates names them)
_SHARE_GRAPH = (runtime.INT8, runtime.ONNX)  # modes whose builders take one shared ``graph=``


def candidate_passes(model: nn.Module, adapter: BackboneAdapter, device: torch.device,
                     precision: str, n_images: int | None = None) -> list[ForwardPass]:
    """The passes to try for ``precision`` and ``n_images`` images, preferred first (see
    :func:`runtime.pass_candidates`).

    Every pass but the last is checked on the first batch against the last (eager, in the last
    candidate precision: fp32 for ``auto``), the reference and the fallback.
    """
    graph = onnxrt.OnnxGraph(model, adapter)  # exported at most once, only if an ONNX Runtime pass runs
    return [_BUILDERS[mode](model, adapter, device, p, **({"graph": graph} if mode in _SHARE_GRAPH else {}))
            for mode, p in runtime.pass_candidates(precision, device, n_images)]


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
