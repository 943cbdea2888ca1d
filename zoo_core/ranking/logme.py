"""LogME: how well frozen features will transfer, from one pass over the data and no training.

You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning" (ICML 2021). For
each class ``k`` the one-vs-rest target ``y_k ∈ {0, 1}^N`` is modelled as Bayesian linear regression on
the features ``F`` (``N × D``) with prior ``w ~ N(0, α⁻¹ I)`` and noise ``N(0, β⁻¹)``; the *evidence*

    log p(y | F, α, β) = D/2 log α + N/2 log β − N/2 log 2π − β/2 ‖y − Fm‖² − α/2 ‖m‖² − 1/2 log |A|,
    A = α I + β FᵀF,   m = β A⁻¹ Fᵀ y,

(equal to ``log N(y; 0, α⁻¹ F Fᵀ + β⁻¹ I)``) is maximised over α and β by MacKay's fixed-point updates
``γ = Σ βσᵢ² / (α + βσᵢ²)``, ``α = γ / ‖m‖²``, ``β = (N − γ) / ‖y − Fm‖²``. LogME is the mean over classes
of the maximised evidence divided by ``N``: higher is better, comparable between backbones on one
dataset (not across datasets).

Everything runs in the eigenbasis of the smaller Gram matrix (``F Fᵀ`` or ``FᵀF``), so one
eigendecomposition serves every class and every iteration costs ``O(min(N, D))``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_EPS = 1e-5  # as in the reference implementation: keeps α, β finite for separable or empty targets


def _spectrum(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(σᵢ² for the non-null directions, Uᵀ Y in those directions) with ``F = U diag(σ) Vᵀ``."""
    n, d = f.shape
    if n <= d:
        s, u = np.linalg.eigh(f @ f.T)
        keep = s > s.max(initial=0.0) * 1e-12
        return s[keep], u[:, keep].T @ y
    s, v = np.linalg.eigh(f.T @ f)
    keep = s > s.max(initial=0.0) * 1e-12
    s, v = s[keep], v[:, keep]
    return s, (v.T @ (f.T @ y)) / np.sqrt(s)[:, None]


def evidence(s: np.ndarray, uy: np.ndarray, y_sq: float, n: int, d: int, alpha: float, beta: float) -> float:
    """The log evidence of one target at (α, β), from the spectrum (see the module docstring)."""
    denom = alpha + beta * s
    m_sq = float(((beta * np.sqrt(s) * uy / denom) ** 2).sum())
    residual = y_sq - float((uy * uy).sum()) + float(((alpha * uy / denom) ** 2).sum())
    log_det = float(np.log(denom).sum()) + (d - len(s)) * math.log(alpha)
    return (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * residual - alpha / 2 * m_sq - log_det / 2)


def _maximise(s: np.ndarray, uy: np.ndarray, y_sq: float, n: int, max_iter: int, tol: float) -> tuple[float, float]:
    """MacKay's fixed point for (α, β) of one target; stops when α/β changes by less than ``tol``."""
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        denom = alpha + beta * s
        gamma = float((beta * s / denom).sum())
        m_sq = float(((beta * np.sqrt(s) * uy / denom) ** 2).sum())
        residual = y_sq - float((uy * uy).sum()) + float(((alpha * uy / denom) ** 2).sum())
        new_alpha, new_beta = gamma / (m_sq + _EPS), max(n - gamma, _EPS) / (max(residual, 0.0) + _EPS)
        done = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) < tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return alpha, beta


def logme(features: Any, labels: Any, num_classes: int | None = None, *, max_iter: int = 11,
          tol: float = 1e-2) -> float:
    """LogME score of ``features`` (``[N, D]``) for the class ``labels`` (``[N]`` ints); higher transfers better.

    :param num_classes: number of classes (default: ``labels.max() + 1``); classes absent from
        ``labels`` are skipped.
    :returns: the mean over classes of the maximised log evidence per sample.
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if f.ndim != 2 or len(f) != len(y) or len(y) < 2:
        raise ValueError(f"logme needs [N, D] features and N labels with N ≥ 2, got {f.shape} and {y.shape}")
    if not np.isfinite(f).all():
        raise ValueError("logme: the features contain NaN or inf")
    k = int(num_classes if num_classes is not None else y.max() + 1)
    present = [c for c in range(k) if (y == c).any()]
    targets = (y[:, None] == np.asarray(present)[None, :]).astype(np.float64)  # one-vs-rest, N × K
    s, uy = _spectrum(f, targets)
    n, d = f.shape
    scores = []
    for j in range(len(present)):
        y_sq = float(targets[:, j].sum())  # ‖y‖² of a 0/1 target
        alpha, beta = _maximise(s, uy[:, j], y_sq, n, max_iter, tol)
        scores.append(evidence(s, uy[:, j], y_sq, n, d, alpha, beta) / n)
    return float(np.mean(scores))
