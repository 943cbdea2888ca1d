"""Whether a faster pass's features serve the head as well as eager fp32's: the pass check's criterion.

The head is a linear probe fitted on *standardised* features (per-feature mean removed, divided by the
between-image std, floored as the head fit floors it: :func:`zoo_core.headfit.objective.moments`), so
what can change its decisions is an error that is large against the between-image spread of the
features, not against their norm. :func:`standardised_error` measures exactly that on the first batch:

    ‖(A − mean A) − (E − mean E)‖ / ‖E − mean E‖, every feature divided by E's floored std,

``A`` the candidate's features, ``E`` eager fp32's. An offset common to all images (which the head's
bias and standardisation absorb) costs nothing; an error that scrambles which images are alike costs
about √2 even when it leaves the norm as it was. :data:`TOLERANCE` is set from real-weights
measurements (README "Performance", ``benchmarks/pass_modes.py --accuracy``): the passes' value
against the head accuracy each lost, and noise added in steps until the head lost 0.3 points.

A batch of one image has no between-image spread: it is judged by the relative L2 error
(:func:`relative_error`) against :data:`SINGLE_IMAGE_TOLERANCE` instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..headfit.objective import moments

CRITERION = "standardised_error"
"""The criterion's name, as ``meta.json`` records it."""

TOLERANCE = 0.25
"""Largest :func:`standardised_error` against eager fp32 that :func:`check_pass` accepts."""

SINGLE_IMAGE_TOLERANCE = 0.05
"""Largest relative L2 error accepted when the first batch holds one image (no between-image spread)."""


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """``‖approx − exact‖ / ‖exact‖`` (Frobenius): how far a pass's features are from eager fp32's overall."""
    exact = exact.float()
    return float((approx.float() - exact).norm() / exact.norm().clamp_min(1e-12))


@dataclass(frozen=True)
class PassCheck:
    """Verdict on a faster pass: ``accepted``, its ``error`` by ``criterion`` vs eager fp32, a log ``message``."""

    accepted: bool
    error: float
    message: str
    criterion: str = CRITERION
    tolerance: float = TOLERANCE

    def record(self, name: str) -> dict[str, Any]:
        """What ``meta.json`` keeps of the check of pass ``name``."""
        return {"pass": name, **{k: v for k, v in asdict(self).items() if k != "message"}}


def standardised_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Centred error of ``approx`` against ``exact`` (``[B, D]``, B ≥ 2), each feature in units of
    ``exact``'s floored between-image std: the noise-to-signal ratio in the space the head is fitted in."""
    exact64, approx64 = exact.double(), approx.double()
    _, inv_std = moments(exact64)
    centred = (exact64 - exact64.mean(0)) * inv_std
    diff = (approx64 - approx64.mean(0)) * inv_std - centred
    return float(diff.norm() / centred.norm().clamp_min(1e-300))


def check_pass(approx: torch.Tensor, exact: torch.Tensor, name: str) -> PassCheck:
    """Accept pass ``name`` when ``approx`` is finite and within :data:`TOLERANCE` (:func:`standardised_error`)
    of ``exact``, the eager fp32 features of the same batch; one image (or constant features): the relative
    L2 error within :data:`SINGLE_IMAGE_TOLERANCE`."""
    finite = bool(torch.isfinite(approx).all())
    spread = len(exact) > 1 and bool((exact.double().std(0) > 0).any())
    if spread and finite:
        err, limit, how = standardised_error(approx, exact), TOLERANCE, "standardised"
    else:
        err, limit, how = relative_error(approx, exact), SINGLE_IMAGE_TOLERANCE, "relative"
    criterion = CRITERION if spread else "relative_l2"
    if not finite or not err <= limit:
        return PassCheck(False, err, f"{name} features differ from fp32 by {err:.3g} ({how}, limit {limit})",
                         criterion, limit)
    return PassCheck(True, err, f"{name} features within {err:.3g} of fp32 on the first batch ({how})",
                     criterion, limit)
