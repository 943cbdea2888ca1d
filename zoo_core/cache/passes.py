"""How the backbone runs during extraction: the model preparation and the forward passes to choose from.

A :class:`ForwardPass` turns a prepared (normalised, channels-last) batch into float32 features. The
passes are eager ones per precision (:func:`eager_pass`), the same with BatchNorm folded into the
preceding convolutions (:func:`folded_pass`), and the backbone's features graph in ONNX Runtime, fp32
(:func:`onnx_pass`) or int8-quantized (:func:`int8_pass`, :mod:`.onnxrt`). Which of them a run tries and
which one it keeps is the pass policy, :mod:`.policy`.

Adding a pass mode (``torch.compile``, another runtime): write a builder
``(model, adapter, device, precision) -> ForwardPass`` that prepares its own model on the first batch it
runs (leaving the caller's untouched) and put it into :data:`BUILDERS`, :data:`PASS_MODES` and
:func:`zoo_core.cache.policy.pass_candidates` ahead of the eager passes; the check against eager fp32 and
the fallback come for free.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .. import runtime
from ..backbones.adapter import BackboneAdapter
from . import onnxrt

log = logging.getLogger(__name__)

FOLD = "bnfold"
"""The pass mode that folds eval-mode BatchNorm into the preceding convolution (:func:`folded_pass`)."""

ONNX = "onnx"
"""The pass mode that runs the backbone's features graph exported to ONNX, fp32, in ONNX Runtime (:func:`onnx_pass`)."""

INT8 = "int8"
"""The pass mode that runs that graph statically quantized to int8 in ONNX Runtime (:func:`int8_pass`)."""

PASS_MODES = (INT8, ONNX, FOLD, "eager")
"""Every pass mode extraction knows, preferred first; the ones a run tries are part of its feature cache key."""


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
    that something else also reads would be changed by folding: :func:`zoo_core.cache.criterion.check_pass` catches it.
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

    return ForwardPass(f"{precision}+{FOLD}", precision, run)


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
    return _session_pass(ONNX, "fp32", graph or onnxrt.OnnxGraph(model, adapter), device, int8=False)


def int8_pass(model: nn.Module, adapter: BackboneAdapter, device: torch.device, precision: str, *,
              graph: onnxrt.OnnxGraph | None = None) -> ForwardPass:
    """``model``'s features int8-quantized in ONNX Runtime on the CPU (:mod:`.onnxrt`), calibrated on the
    first batch it runs; ``graph`` shares one export with the fp32 ONNX pass, ``precision`` is not used."""
    return _session_pass(INT8, INT8, graph or onnxrt.OnnxGraph(model, adapter), device, int8=True)


BUILDERS: dict[str, Callable[..., ForwardPass]] = {
    "eager": eager_pass, FOLD: folded_pass, ONNX: onnx_pass, INT8: int8_pass,
}
"""Pass mode → builder ``(model, adapter, device, precision)`` (:func:`zoo_core.cache.policy.pass_candidates`
names the modes to build)."""

SHARE_GRAPH = (INT8, ONNX)
"""The modes whose builders take one shared ``graph=`` (a single ONNX export for both)."""
