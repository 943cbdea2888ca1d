"""Statistics for leaderboards you can trust: intervals, paired tests, rank correlations.

- :func:`wilson_interval` — 95 % interval of an accuracy measured on ``n`` validation images (Wilson score
  interval: well-behaved at 0 %, 100 % and small ``n``, unlike the normal approximation).
- :func:`mcnemar_exact` — the paired exact McNemar test of two classifiers on the *same* images: only the
  images on which exactly one of them is right carry information; under "equally accurate" each such
  image is a fair coin, so the two-sided p-value is a binomial tail.
- :func:`kendall_tau` and :func:`spearman_rho` — agreement of two rankings (tau-b and rho with average
  ranks for ties), used to check cheap transferability scores against trained accuracy.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95 % quantile of the standard normal
TIE_ALPHA = 0.05  # entries whose McNemar p-value against #1 is at least this are "tied with #1"


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` of the proportion ``correct / n``; ``(0, 1)`` when ``n == 0``."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X ≤ k) for X ~ Binomial(n, 1/2), exact (log-space sum, fine for n up to millions)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict[str, float]:
    """Exact two-sided McNemar test of two classifiers scored on the same images.

    :param a_correct: per image, whether classifier A was right.
    :param b_correct: the same images, whether classifier B was right.
    :returns: ``{"a_only": b, "b_only": c, "p_value": p}`` with ``p = min(1, 2·P(X ≤ min(b, c)))``,
        ``X ~ Binomial(b + c, 1/2)``; ``p = 1`` when the two never disagree.
    """
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"McNemar needs the same images for both classifiers, got {a.shape} and {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    n = a_only + b_only
    p = 1.0 if n == 0 else min(1.0, 2.0 * _binom_cdf_half(min(a_only, b_only), n))
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``values`` (ascending), ties sharing their average rank."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v))
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks); NaN for < 2 items or no spread."""
    if len(x) != len(y):
        raise ValueError("spearman_rho needs two sequences of the same length")
    if len(x) < 2:
        return float("nan")
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den else float("nan")


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either sequence accounted for); NaN for < 2 items or no spread."""
    if len(x) != len(y):
        raise ValueError("kendall_tau needs two sequences of the same length")
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(xa)
    if n < 2:
        return float("nan")
    dx = np.sign(xa[:, None] - xa[None, :])
    dy = np.sign(ya[:, None] - ya[None, :])
    upper = np.triu_indices(n, 1)
    s = float((dx * dy)[upper].sum())
    tx, ty = float((dx[upper] != 0).sum()), float((dy[upper] != 0).sum())
    return s / math.sqrt(tx * ty) if tx and ty else float("nan")


def majority_baseline(labels: Sequence[int], train_labels: Sequence[int] | None = None) -> float:
    """Top-1 of always predicting the majority class: the share of ``labels`` in the most frequent class of
    ``train_labels`` (default: of ``labels`` itself; ties: the lowest class index); 0.0 without labels. A
    classifier at or below it has learned nothing the class frequencies do not already say."""
    counts = np.bincount(np.asarray(train_labels if train_labels is not None else labels, dtype=np.int64))
    if len(labels) == 0 or counts.size == 0:
        return 0.0
    return float(np.mean(np.asarray(labels, dtype=np.int64) == int(counts.argmax())))


def baseline_note(share: float | None, what: str) -> str | None:
    """The line printed under a leaderboard or ranking: the majority-class baseline of ``what``."""
    if share is None:
        return None
    return (f"majority-class baseline: {share:.4f} top-1 on {what} by always predicting the most frequent "
            "training class; an entry at or below it learned nothing beyond the class frequencies.")
