"""The int8 extraction pass: the backbone's feature graph statically quantized in ONNX Runtime.

On the first batch it runs, the int8 pass (:func:`zoo_core.cache.passes.int8_pass`) calls
:func:`quantized_session`, which exports ``adapter.features(model, ·)`` to ONNX (torch's
``torch.export``-based exporter, dynamic batch), calibrates the activation ranges on the first
:data:`CALIBRATION_IMAGES` images of that batch (min/max), quantizes weights per channel to int8 and
activations to uint8 (QDQ format, ``onnxruntime.quantization.quantize_static``) and opens an ONNX Runtime
session on it; every batch then runs in that session on the CPU. The caller's model is only read.

Like every pass it is checked against eager fp32 on the first batch (:func:`zoo_core.cache.choose_pass`,
most of which the calibration never saw) and dropped, with the reason in the log, when it is not
within :data:`zoo_core.runtime.PASS_TOLERANCE` or when anything on the way fails (a missing package,
a model the exporter cannot trace). When ``auto`` tries it: :func:`zoo_core.runtime.pass_candidates`.
Its measured speed and accuracy: README "Performance" (``benchmarks/pass_modes.py``).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import runtime
from ..adapter import BackboneAdapter
from ..errors import ZooError
from ..onnxgraph import INSTALL_HINT, missing_packages, onnx_bytes, quiet_loggers

CALIBRATION_IMAGES = 8
"""Images of the first batch that set the activation ranges (more raise the calibration's memory peak)."""

_ONNX_MAX_BYTES = 2 * 1024**3 - 2**24  # protobuf's limit for one ONNX file, less room for the graph


class _Features(nn.Module):
    """``adapter.features(model, x)`` as a module, so the exporter traces exactly what the head reads."""

    def __init__(self, model: nn.Module, adapter: BackboneAdapter) -> None:
        super().__init__()
        self.model, self.adapter = model, adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter.features(self.model, x)


class _Calibration:
    """The calibration images as one ``CalibrationDataReader`` batch (duck-typed: ``get_next``)."""

    def __init__(self, images: np.ndarray) -> None:
        self._left = [{"input": images}]

    def get_next(self) -> dict[str, np.ndarray] | None:
        return self._left.pop() if self._left else None


def quantized_session(model: nn.Module, adapter: BackboneAdapter, x: torch.Tensor) -> Any:
    """An ONNX Runtime session running ``model``'s features int8-quantized, calibrated on ``x``'s first images.

    Raises :class:`ZooError` when the packages are missing or the weights exceed one ONNX file; the
    exporter's and quantizer's own exceptions pass through (the caller falls back on any of them).
    """
    missing = missing_packages(runtime.INT8_PACKAGES)
    if missing:
        raise ZooError(f"the int8 pass needs {', '.join(missing)}: {INSTALL_HINT}")
    if sum(p.numel() * p.element_size() for p in model.parameters()) > _ONNX_MAX_BYTES:
        raise ZooError("the weights do not fit one ONNX file (2 GiB)")
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    x = x.detach().to("cpu", torch.float32).contiguous()
    with tempfile.TemporaryDirectory(prefix="zoo-int8-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_bytes(_Features(model, adapter), x[:1], output_name="features"))
        with quiet_loggers("", level=logging.ERROR):  # the quantizer's pre-processing hints go to the root logger
            quantize_static(str(src), str(dst), _Calibration(x[:CALIBRATION_IMAGES].numpy()),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        return ort.InferenceSession(str(dst), options, providers=["CPUExecutionProvider"])
