"""Seeded stratified row selection for the head fit: the inner train/val split, the grid's subsamples and
the K folds of ``compare --folds``.

All draw from one routine, :func:`_shuffled_classes`: per class present (in class order) its rows in a
seeded random order, from one ``torch.Generator`` consumed class after class. They differ only in how many
rows of each class they take, or where they deal them (see each docstring).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch


def _shuffled_classes(labels: torch.Tensor, seed: int, minlength: int = 0) -> Iterator[torch.Tensor]:
    """Per class present in ``labels`` (CPU, >= 0; ascending class), its positions in a seeded random order."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.argsort(labels, stable=True)
    start = 0
    for n_c in torch.bincount(labels, minlength=minlength).tolist():
        members = order[start:start + n_c]
        start += n_c
        if n_c:
            yield members[torch.randperm(n_c, generator=gen)]


def stratified_split(y: torch.Tensor, num_classes: int, val_fraction: float,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inner split of :func:`~zoo_core.headfit.fit_linear_head`: seeded, per class
    ``round(n_c * val_fraction)`` held out, every class keeping at least one training sample.
    Returns sorted (train, val) row-index tensors (CPU)."""
    tr, va = [], []
    for members in _shuffled_classes(y.cpu(), seed, num_classes):
        n_c = members.numel()
        n_val = min(int(math.floor(n_c * val_fraction + 0.5)), n_c - 1)
        va.append(members[:n_val])
        tr.append(members[n_val:])
    return torch.sort(torch.cat(tr)).values, torch.sort(torch.cat(va)).values


def stratified_subsample(idx: torch.Tensor, y: torch.Tensor, cap: int, seed: int) -> torch.Tensor:
    """At most about ``cap`` of the sorted row indices ``idx``: per class ``round(n_c * cap / n)`` (Python's
    rounding, at least one), seeded; sorted. ``idx`` itself when it holds at most ``cap`` rows."""
    n = idx.numel()
    if n <= cap:
        return idx
    keep = []
    for members in _shuffled_classes(y.cpu()[idx], seed):
        m = max(1, int(round(members.numel() * cap / n)))
        keep.append(idx[members[:m]])
    return torch.sort(torch.cat(keep)).values


def stratified_folds(y: torch.Tensor, k: int, seed: int) -> list[torch.Tensor]:
    """``k`` disjoint folds that cover every row: each class's rows (in the seeded order above) dealt out
    round-robin, the deal continuing from one class to the next, so every fold holds about ``1/k`` of each
    class and fold sizes differ by at most one. Returns ``k`` sorted row-index tensors (CPU)."""
    if k < 2:
        raise ValueError(f"stratified_folds needs k >= 2, got {k}")
    parts: list[list[torch.Tensor]] = [[] for _ in range(k)]
    dealt = 0
    for members in _shuffled_classes(y.cpu(), seed):
        for f in range(k):
            parts[(dealt + f) % k].append(members[f::k])
        dealt += members.numel()
    return [torch.sort(torch.cat(p)).values if p else torch.empty(0, dtype=torch.long) for p in parts]
