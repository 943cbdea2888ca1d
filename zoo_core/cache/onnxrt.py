"""The backbone in ONNX Runtime for extraction: its features graph in fp32 (``onnx``) or int8 (``int8``).

:class:`OnnxGraph` exports ``adapter.features(model, ·)`` once, on the first batch that needs it
(torch's ``torch.export``-based exporter, dynamic batch, :func:`zoo_core.onnxgraph.save_onnx`), into a
temporary folder that goes away with the object or into the export cache
(:mod:`zoo_core.cache.onnxcache`: once per backbone weights and input size), and opens ONNX Runtime CPU
sessions on it:

- fp32: the exported graph as it is (ONNX Runtime fuses BatchNorm into convolutions and picks its own
  kernels; the features match eager fp32 up to float rounding);
- int8: static quantization (``onnxruntime.quantization.quantize_static``, QDQ format): weights int8 per
  channel, activations uint8 with min/max ranges calibrated on the first :data:`CALIBRATION_IMAGES`
  images of the first batch.

The caller's model is only read. The passes built on these (:func:`zoo_core.cache.passes.onnx_pass`,
:func:`~zoo_core.cache.passes.int8_pass`) are checked against eager fp32 on the first batch like any
other and dropped, with the reason in the log, when they are not within
the check of :func:`zoo_core.cache.criterion.check_pass` or when anything on the way fails (a missing package, a model the
exporter cannot trace). When ``auto`` tries them: :func:`zoo_core.cache.policy.pass_candidates`; their
measured speed and accuracy: README "Performance" (``benchmarks/pass_modes.py``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..backbones.adapter import BackboneAdapter
from ..errors import ZooError
from ..onnxgraph import INSTALL_HINT, MAX_BYTES, missing_packages, quiet_loggers, save_onnx, weight_bytes

INT8_PACKAGES = ("onnx", "onnxscript", "onnxruntime")

EXPORT_OPSET = 18
"""The ONNX opset the features graph is exported in (part of the export cache's key)."""
"""What the ONNX Runtime passes need (the ``export`` extra)."""

CALIBRATION_IMAGES = 4
"""Images of the first batch that set the int8 activation ranges. The calibration keeps every intermediate
output of every calibration image in memory (about 24 MiB per 224 px image for a ResNet-18), so more of
them raise the peak memory of extraction; the check on the whole first batch judges the result."""


class FeaturesModule(nn.Module):
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


def as_input(x: torch.Tensor) -> np.ndarray:
    """A batch as the sessions take it: float32, contiguous NCHW, in CPU memory."""
    return x.detach().to("cpu", torch.float32).contiguous().numpy()


Store = Callable[[tuple[int, ...], Callable[[Path], Path]], Path]
"""``store(input C×H×W, export)`` → the fp32 graph's path: where :class:`OnnxGraph` keeps its export
(``export(path)`` writes it; :func:`zoo_core.cache.onnxcache.graph_store` keeps it in the cache root)."""


class OnnxGraph:
    """One backbone's features graph in ONNX, exported on first use and shared by the ONNX Runtime passes.

    Without a ``store`` the file lives in a temporary folder (on disk, not in memory) that is removed when
    the object goes; with one, where the store keeps it (exported only when the store has none).
    """

    def __init__(self, model: nn.Module, adapter: BackboneAdapter, store: Store | None = None) -> None:
        self.model, self.adapter, self.store = model, adapter, store
        self._path: Path | None = None
        self._dir: Path | None = None

    def _folder(self) -> Path:
        """A temporary folder of this object's own (removed with it), for the int8 graph."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="zoo-onnx-"))
            weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        return self._dir

    def path(self, x: torch.Tensor) -> Path:
        """The fp32 ONNX file, exported now (with two images of ``x`` as the example) if it is not yet."""
        if self._path is not None:
            return self._path
        missing = missing_packages(INT8_PACKAGES)
        if missing:
            raise ZooError(f"the ONNX Runtime passes need {', '.join(missing)}: {INSTALL_HINT}")
        if weight_bytes(self.model) > MAX_BYTES:
            raise ZooError("the weights do not fit one ONNX file (2 GiB)")
        example = torch.from_numpy(as_input(x[:2])).expand(2, *x.shape[1:])  # 2: torch.export fixes a size 1

        def export(dst: Path) -> Path:
            return save_onnx(FeaturesModule(self.model, self.adapter), example, dst, output_name="features",
                             opset=EXPORT_OPSET)

        shape = tuple(int(d) for d in x.shape[1:])
        self._path = self.store(shape, export) if self.store is not None else export(self._folder() / "float.onnx")
        return self._path

    def session(self, x: torch.Tensor, *, int8: bool) -> Any:
        """An ONNX Runtime CPU session on the graph: fp32, or int8-quantized with ``x``'s first images as
        the calibration set."""
        src = self.path(x)
        import onnxruntime as ort

        if int8:
            from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

            dst = self._folder() / "int8.onnx"
            with quiet_loggers("", level=logging.ERROR):  # the quantizer's hints go to the root logger
                quantize_static(str(src), str(dst), _Calibration(as_input(x[:CALIBRATION_IMAGES])),
                                quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8)
            src = dst
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        options.enable_cpu_mem_arena = False  # ~100 MiB less for a ResNet-18 at batch 32, no slower
        return ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
