"""The ONNX export cache: a backbone's features graph exported once per weights, input size and opset.

The ONNX Runtime passes (:mod:`.onnxrt`) run an export of ``adapter.features(model, ·)`` that takes
seconds (about 4 s for a ResNet-18 on 2 cores). :func:`graph_store` keeps it in the cache root,
``<cache_root>/onnx/<key>/float.onnx`` (+ ``float.onnx.data``), under :func:`~.keys.onnx_key` (the model's
fingerprint — backbone and weights —, the adapter, the input's C×H×W, the opset, the exporter's versions),
checksummed like every entry: the next split of the same backbone, and later runs, open it instead of
exporting again. The int8 graph is not kept: its calibration is the split's own first images.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from torch import nn

from ..backbones.adapter import BackboneAdapter
from .keys import model_fingerprint, onnx_key
from .onnxrt import EXPORT_OPSET, Store
from .store import EntryWriter, entry_dir, open_entry

log = logging.getLogger(__name__)

KIND = "onnx"
"""The cache kind (sub-directory of the cache root) of exported graphs."""


def graph_store(model: nn.Module, adapter: BackboneAdapter) -> Store:
    """An :class:`~.onnxrt.OnnxGraph` store that keeps ``model``'s export in the cache root (see the module)."""
    def store(input_shape: tuple[int, ...], export: Callable[[Path], Path]) -> Path:
        key = onnx_key(fingerprint=model_fingerprint(model, adapter), features=type(adapter).__qualname__,
                       input_shape=input_shape, opset=EXPORT_OPSET)
        entry = entry_dir(KIND, key)
        if open_entry(entry, KIND, key, lambda meta: {}) is not None:
            log.info("ONNX export cache hit: %s", entry)
            return entry / "float.onnx"
        writer = EntryWriter(KIND, key)
        try:
            t0 = time.perf_counter()
            export(writer.tmp / "float.onnx")
            seconds = round(time.perf_counter() - t0, 3)
            final = writer.commit({"parts": key.parts, "seconds": seconds})
        except BaseException:
            writer.abort()
            raise
        log.info("ONNX export: %.1fs → %s", seconds, final)
        return final / "float.onnx"

    return store
