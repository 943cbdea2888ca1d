"""Device, precision and seeding policy: the one place that decides where and in what precision work runs.

``pick_device("auto")`` prefers CUDA, then MPS, then the CPU. ``resolve_precision`` turns ``auto`` into
bf16 only where bf16 is native and fast (CUDA GPUs with bf16, CPUs with AVX512-BF16/AMX), else fp32;
``training_precision`` adds fp16 with a grad scaler for older CUDA GPUs. Which faster inference pass
feature extraction tries, and how it is checked, is :mod:`zoo_core.cache.policy`.
"""

from __future__ import annotations

import contextlib
import random
import sys
from typing import Any

import numpy as np
import torch

from .errors import ZooError

_PRECISIONS = {"auto": "auto", "fp32": "fp32", "float32": "fp32", "32": "fp32", "bf16": "bf16",
               "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "half": "fp16", "16": "fp16"}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

_DEVICES = "auto, cpu, cuda, cuda:N or mps"


def pick_device(requested: str | torch.device) -> torch.device:
    """``auto`` → cuda, then mps, then cpu; else ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, which must exist here.

    Anything else, or a device this machine lacks, is a one-line :class:`ZooError` (``--device``)."""
    req = str(requested).strip().lower()
    if req == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(req)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ZooError(f"--device {requested!r} is not a device zoo can use; use {_DEVICES}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ZooError(f"--device {requested!r}: no CUDA GPU is available here (torch {torch.__version__}, "
                       f"CUDA build {torch.version.cuda or 'none'}); use --device cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ZooError(f"--device {requested!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                       f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not _mps_available():
        raise ZooError(f"--device {requested!r}: Apple's MPS backend is not available here; use --device cpu or auto")
    return dev


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX) and oneDNN can use it.

    CPUs without it (AVX2, plain AVX-512) emulate bf16 and run a CNN 5–40× slower than fp32.
    """
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    if sys.platform == "darwin":
        return False  # Apple CPUs: oneDNN bf16 paths are not the fast ones
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def is_auto(precision: str) -> bool:
    """True when ``precision`` (any spelling ``--precision`` takes) is ``auto``."""
    return _PRECISIONS.get(str(precision).strip().lower()) == "auto"


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """Turn ``"auto" | "fp32" | "bf16" | "fp16"`` into the precision used on ``device``.

    ``auto`` picks ``bf16`` only where it is supported *and* faster: CUDA GPUs with native bf16, CPUs
    with AVX512-BF16/AMX; everything else (including AVX2 CPUs, where emulated bf16 is many times
    slower) gets ``fp32``. Explicit values are returned as given.
    """
    p = _PRECISIONS.get(str(precision).strip().lower())
    if p is None:
        raise ZooError(f"unknown precision {precision!r}; use one of auto, fp32, bf16, fp16 (--precision)")
    if p != "auto":
        return p
    dev = torch.device(device)
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        return "bf16" if ok else "fp32"
    if dev.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def training_precision(requested: str, device: torch.device) -> str:
    """``auto`` → bf16 on GPUs/CPUs with fast bf16, fp16 (+ scaler) on older CUDA GPUs, else fp32."""
    if requested == "auto" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16"
    return resolve_precision(requested, device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """An autocast context for a resolved ``precision`` (a no-op for fp32)."""
    if precision in _DTYPES:
        return torch.autocast(device.type, dtype=_DTYPES[precision])
    return contextlib.nullcontext()


def autocast_for(device: torch.device, precision: str) -> tuple[Any, torch.amp.GradScaler | None]:
    """(autocast context factory, grad scaler or None) for training in the resolved precision."""
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" and device.type == "cuda" else None
    return (lambda: autocast(device, precision)), scaler


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
