"""Device, precision and seeding policy: the one place that decides where and in what precision work runs.

``pick_device("auto")`` prefers CUDA, then MPS, then the CPU. ``resolve_precision`` turns ``auto`` into
bf16 only where bf16 is native and fast (CUDA GPUs with bf16, CPUs with AVX512-BF16/AMX), else fp32;
``training_precision`` adds fp16 with a grad scaler for older CUDA GPUs.

A faster inference pass is never trusted blindly: ``precision_candidates("auto", device)`` lists what
``auto`` tries (the resolved low precision first, fp32 as the fallback); feature extraction
(:mod:`zoo_core.cache.passes`) accepts a pass only when its output on the first batch passes
:func:`zoo_core.cache.criterion.check_pass` against eager fp32. ``pass_candidates`` adds the pass
modes: each precision BatchNorm-folded, eager last, and for ``auto`` on a CPU with enough images
(:data:`ONNX_MIN_IMAGES`, :func:`onnx_pays_back`) the backbone in ONNX Runtime, int8 first and fp32 before
the first fp32 pass; ``$BACKBONE_ZOO_PASS`` (:data:`PASS_ENV`) pins one mode.
"""

from __future__ import annotations

import contextlib
import os
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


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """``‖approx − exact‖ / ‖exact‖`` (Frobenius): how far a pass's features are from eager fp32's."""
    exact = exact.float()
    return float((approx.float() - exact).norm() / exact.norm().clamp_min(1e-12))


def precision_candidates(precision: str, device: str | torch.device) -> list[str]:
    """Precisions to try, preferred first; every one but the last is checked against fp32 first.

    ``auto`` that resolves to a low precision gives ``[that, "fp32"]`` (fp32 is the fallback when the
    check fails); ``auto`` that resolves to fp32, and any explicit precision, give just that one.
    """
    resolved = resolve_precision(precision, device)
    if _PRECISIONS[str(precision).strip().lower()] == "auto" and resolved != "fp32":
        return [resolved, "fp32"]
    return [resolved]


FOLD = "bnfold"
"""The pass mode that folds eval-mode BatchNorm into the preceding convolution (:mod:`zoo_core.cache.passes`)."""

ONNX = "onnx"
"""The pass mode that runs the backbone's features graph exported to ONNX, fp32, in ONNX Runtime (:mod:`zoo_core.cache.onnxrt`)."""

INT8 = "int8"
"""The pass mode that runs that graph statically quantized to int8 in ONNX Runtime (:mod:`zoo_core.cache.onnxrt`)."""

PASS_MODES = (INT8, ONNX, FOLD, "eager")
"""Every pass mode extraction knows, preferred first; the ones a run tries are part of its feature cache key."""

PASS_ENV = "BACKBONE_ZOO_PASS"
"""Environment variable that pins the pass mode: ``auto`` (the default policy) or one of :data:`PASS_MODES`."""

ONNX_MIN_IMAGES = {"fp32": 1000, "bf16": 2500}
"""Images from which ``auto`` tries the ONNX Runtime passes (int8, then fp32), per resolved float precision.

Their setup (export to ONNX, calibration and quantization, sessions: 7–10 s for a ResNet-18 on 2 cores)
pays back from about 450 images against the folded fp32 pass and about 1,300 against folded bf16 (int8
runs 3.7× and 1.9× as fast there; README "Performance", ``benchmarks/pass_modes.py``); the thresholds
leave a margin of about two.
"""

INT8_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
"""What the ONNX Runtime passes need (the ``export`` extra)."""


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

    Only for ``precision="auto"``, with the packages installed (:data:`INT8_PACKAGES`) and at least
    :data:`ONNX_MIN_IMAGES` images for the precision ``auto`` resolves to.
    """
    if _PRECISIONS.get(str(precision).strip().lower()) != "auto" or torch.device(device).type != "cpu":
        return False
    resolved = resolve_precision(precision, device)
    if n_images is None or n_images < ONNX_MIN_IMAGES.get(resolved, sys.maxsize):
        return False
    from .onnxgraph import missing_packages

    return not missing_packages(INT8_PACKAGES)


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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
