"""A module as an ONNX graph, in memory or on disk: torch's ``torch.export``-based exporter, quiet, dynamic batch.

Used by ``zoo export --format onnx`` (:mod:`zoo_core.exporting`) and by the ONNX Runtime extraction passes
(:mod:`zoo_core.cache.onnxrt`). Needs the ``onnx`` and ``onnxscript`` packages (the ``export`` extra).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .errors import ZooError

MAX_BYTES = 2 * 1024**3 - 2**24
"""Protobuf's limit for one ONNX file, less room for the graph: larger weights do not fit one file."""

INSTALL_HINT = "pip install 'backbone-zoo[export]'"
"""What installs the ONNX packages (``onnx``, ``onnxscript``, ``onnxruntime``)."""


def missing_packages(names: tuple[str, ...] = ("onnx", "onnxscript")) -> list[str]:
    """The packages of ``names`` that cannot be imported here (found without importing them)."""
    import importlib.util

    return [n for n in names if importlib.util.find_spec(n) is None]


def weight_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s parameters (what an ONNX file of it holds), to compare with :data:`MAX_BYTES`."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.WARNING) -> Iterator[None]:
    """Loggers ``names`` (``""``: the root logger) log only from ``level`` up for the duration."""
    loggers = [logging.getLogger(n or None) for n in names]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, before):
            lg.setLevel(lvl)


@contextlib.contextmanager
def _exporting() -> Iterator[None]:
    """The exporter's own printing (its steps and, on failure, the whole graph), warnings and info logs
    kept out of the log; a missing package is a :class:`ZooError` with the install line."""
    missing = missing_packages()
    if missing:
        raise ZooError(f"ONNX export needs the onnx and onnxscript packages ({', '.join(missing)} missing): "
                       f"{INSTALL_HINT}")
    noise = io.StringIO()
    with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise), warnings.catch_warnings(), \
            quiet_loggers("onnxscript", "onnx_ir"):
        warnings.simplefilter("ignore")
        yield


def _program(module: nn.Module, example: torch.Tensor, input_name: str, output_name: str,
             opset: int | None = None) -> Any:
    return torch.onnx.export(module, (example,), dynamo=True, verbose=False, input_names=[input_name],
                             opset_version=opset,
                             output_names=[output_name], dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))


def onnx_bytes(module: nn.Module, example: torch.Tensor, *, input_name: str = "input",
               output_name: str = "output") -> bytes:
    """``module`` (one tensor in, one out) as a serialised ONNX model whose first dimension is dynamic.

    Quiet (see :func:`_exporting`); anything the exporter raises is passed on (callers phrase their own
    one-line error).
    """
    with _exporting():
        return _program(module, example, input_name, output_name).model_proto.SerializeToString()


def save_onnx(module: nn.Module, example: torch.Tensor, path: Path, *, input_name: str = "input",
              output_name: str = "output", opset: int | None = None) -> Path:
    """:func:`onnx_bytes` written to ``path``, the weights beside it in ``<path>.data`` (no serialised copy
    of them in memory); ``path``. ``opset``: the ONNX opset (None: the exporter's default)."""
    with _exporting():
        _program(module, example, input_name, output_name, opset).save(str(path), external_data=True)
    return path
