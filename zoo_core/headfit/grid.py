"""Choosing the regularisation strength ``C`` of the head fit: a warm-started search on the inner split.

The grid is in scikit-learn's ``C = 1 / (l2 * sum_i w_i)``: the same ``C`` means the same prior whatever
the number of samples, so a value chosen on the inner split carries over to the refit on all samples.
Every value is fitted on the inner-train part and scored on the inner-val part; the chosen one
(:func:`select`) has the lowest inner-val loss among the values whose inner-val accuracy is within one
binomial standard error of the best accuracy. Accuracy alone is too noisy on small inner splits (a few
hundred images: its argmax jumps between far-apart values from one seed to the next); the loss among the
statistically tied values is a stable tie-break.

Speed (50,000 x 2,048 features, 10 classes: seconds on 2 CPU cores):

* the search runs on standardised in-memory copies of the inner split, subsampled (stratified, seeded) to
  at most :data:`GRID_MAX_TRAIN` / :data:`GRID_MAX_VAL` rows: plenty to rank values of ``C``;
* small problems (inner-train rows x features up to :data:`FULL_GRID_WORK`) fit the whole grid; large ones
  go coarse to fine: whole decades of ``C``, strong to weak regularisation, until the inner-val scores
  stop improving, then the half-decades around the best;
* every fit is warm-started from the solutions already found, inter-/extrapolated in log C (a
  continuation predictor), and its first step is scaled by the softmax curvature;
* the refit on all samples starts from the subsample's solution *with the refit's l2* (the same objective
  up to sampling), not the one with the same ``C``: its weights are much closer to the refit's optimum.

:data:`FULL_GRID_WORK` is read at call time: tests set it to 0 to force the coarse-to-fine path on a small
problem.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .. import logs
from .objective import Problem
from .precond import Correlation, correlation
from .solver import fit_l2
from .split import stratified_subsample

# Default grid in scikit-learn's C (= 1 / (l2 * n)): half-decades from strong to weak regularisation.
DEFAULT_C_GRID: tuple[float, ...] = tuple(10.0 ** (k / 2) for k in range(-8, 3))  # 1e-4 … 10
GRID_MAX_TRAIN = 10_000  # inner-train rows the grid search fits on (a stratified subsample above this)
GRID_MAX_VAL = 5_000  # inner-val rows it scores on
GRID_BYTES = 320 << 20  # … and at most this much float32 for the two standardised copies together
PATIENCE = 1  # coarse (decade) values in a row without improvement before the path is cut
FULL_GRID_WORK = 4_000_000  # grid-train rows x D up to which every grid value is fitted (cheap anyway)
GRID_RTOL = 1e-2  # relative-gradient tolerance of the grid fits (only their ranking matters)
GRID_FTOL = 1e-7  # loss-change tolerance of the grid fits
GRID_MAX_ITER = 100
SELECTION_RULE = "lowest inner-val loss among C values within one standard error of the best inner-val accuracy"


@dataclass
class GridResult:
    """What the search hands to the refit: the chosen l2, and where the refit starts."""

    l2: float  # chosen l2 at the scale of all samples (0 for C = inf)
    val_accuracy: float  # inner-val accuracy of the chosen value
    ws: torch.Tensor  # warm start of the refit: standardised-space weight (float64 [K, D])
    b: torch.Tensor  # … and bias (float64 [K])
    correlation: Correlation | None  # the preconditioner's correlation matrix (inner-train rows)
    curvature: float  # mean softmax curvature at the warm start
    records: list[dict] = field(default_factory=list)  # one per fit: C, l2, stage, val scores, iterations, …
    info: dict[str, Any] = field(default_factory=dict)  # inner_split, grid_search, selection_rule
    timing: dict[str, float] = field(default_factory=dict)  # grid_setup, grid (seconds)


def std_error(accuracy: float, n: float) -> float:
    """Binomial standard error of an accuracy measured on ``n`` (effective) samples."""
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / max(n, 1.0))


def select(scores: dict[int, tuple[float, float]], n_val: float) -> int:
    """The chosen grid index from {index: (inner-val accuracy, loss)}: lowest loss among the values whose
    accuracy is within one binomial standard error of the best (ties: higher accuracy, then stronger
    regularisation)."""
    best = max(acc for acc, _ in scores.values())
    se = std_error(best, n_val)
    close = [i for i, (acc, _) in scores.items() if acc >= best - se - 1e-12]
    return min(close, key=lambda i: (scores[i][1], -scores[i][0], i))


def c_values(c_grid: Sequence[float] | None, l2_grid: Sequence[float] | None, mass: float) -> list[float]:
    """The candidate values of C, ascending: ``c_grid``, or ``l2_grid`` at the scale ``mass``, or the default."""
    if c_grid is not None:
        return sorted({float(c) for c in c_grid})
    if l2_grid is not None:
        return sorted({1.0 / (float(v) * mass) if v > 0 else math.inf for v in l2_grid})
    return list(DEFAULT_C_GRID)


@dataclass
class _Point:
    """One fitted value of C: its solution, inner-val scores and the mean softmax curvature there."""

    ws: torch.Tensor
    b: torch.Tensor
    accuracy: float
    loss: float
    curvature: float


class _Search:
    """Fits of C on the inner split, each warm-started from the points already fitted."""

    def __init__(self, p_tr: Problem, p_va: Problem, s: Correlation | None, cs: list[float], mass_full: float,
                 bar: Any):
        self.p_tr, self.p_va, self.s, self.cs, self.mass_full, self.bar = p_tr, p_va, s, cs, mass_full, bar
        self.points: dict[int, _Point] = {}  # by index into cs, in the order fitted
        self.records: list[dict] = []

    def fit(self, c: float, stage: str, ws: torch.Tensor, b: torch.Tensor, curvature: float) -> _Point:
        """Fit C = ``c`` from (ws, b) or the continuation predictor (:meth:`warm_start`); record it."""
        ws0, b0 = self.warm_start(c, ws, b)
        t1 = time.perf_counter()
        lam = 0.0 if math.isinf(c) else 1.0 / (c * self.p_tr.mass)
        sol = fit_l2(self.p_tr, self.s, lam, ws0, b0, curvature, max_iter=GRID_MAX_ITER, rtol=GRID_RTOL,
                     ftol=GRID_FTOL)
        m = self.p_va.evaluate(sol.ws, sol.b)
        curv_end = self.p_tr.evaluate(sol.ws, sol.b, curvature=True)["curvature"]
        self.records.append({"C": c, "l2": 0.0 if math.isinf(c) else 1.0 / (c * self.mass_full), "stage": stage,
                             "val_accuracy": round(m["accuracy"], 6), "val_loss": round(m["loss"], 6),
                             "iterations": sol.iterations, "evaluations": sol.evaluations,
                             "converged": sol.converged, "stop": sol.stop,
                             "seconds": round(time.perf_counter() - t1, 4)})
        return _Point(sol.ws, sol.b, m["accuracy"], m["loss"], curv_end)

    def fit_index(self, i: int, stage: str, ws: torch.Tensor, b: torch.Tensor, curvature: float) -> _Point:
        """:meth:`fit` grid value ``i`` and keep it as a point of the search."""
        self.points[i] = point = self.fit(self.cs[i], stage, ws, b, curvature)
        self.bar.update(1)
        return point

    def pick(self, n_val: float) -> int:
        """The index :func:`select` chooses among the points so far."""
        return select({i: (p.accuracy, p.loss) for i, p in self.points.items()}, n_val)

    def warm_start(self, c: float, ws0: torch.Tensor, b0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Warm start for C = ``c``: (ws0, b0), or the points so far inter-/extrapolated linearly in log C
        (a continuation predictor), whichever has the lower objective at ``c``."""
        done = sorted((math.log(self.cs[j]), j) for j in self.points if math.isfinite(self.cs[j]))
        if len(done) < 2 or not math.isfinite(c):
            return ws0, b0
        lc = math.log(c)
        lower = [t for t in done if t[0] < lc]
        upper = [t for t in done if t[0] > lc]
        if lower and upper:
            (l0, j0), (l1, j1) = lower[-1], upper[0]
        elif len(lower) >= 2:
            (l0, j0), (l1, j1) = lower[-2], lower[-1]
        else:
            return ws0, b0
        t = (lc - l0) / (l1 - l0)
        p0, p1 = self.points[j0], self.points[j1]
        ws_p = p0.ws + t * (p1.ws - p0.ws)
        b_p = p0.b + t * (p1.b - p0.b)
        lam = 1.0 / (c * self.p_tr.mass)
        if self._objective(lam, ws_p, b_p) < self._objective(lam, ws0, b0):
            return ws_p, b_p
        return ws0, b0

    def _objective(self, lam: float, ws: torch.Tensor, b: torch.Tensor) -> float:
        """The inner-train objective at (ws, b): a loss-only pass, no gradient needed."""
        return self.p_tr.evaluate(ws, b)["loss"] + 0.5 * lam * float(ws.square().sum())


def _inner_problems(prob: Problem, tr: torch.Tensor, va: torch.Tensor, seed: int,
                    max_train: int) -> tuple[Problem, Problem]:
    """Standardised in-memory inner-train and inner-val problems, subsampled to the row and memory caps."""
    cap_rows = max(1000, GRID_BYTES // (4 * prob.x.shape[1]))  # both copies together
    cap_tr = min(max_train, max(1, int(cap_rows * 2 / 3)))
    cap_va = min(GRID_MAX_VAL, max(1, cap_rows - min(cap_tr, tr.numel())))
    tr_s = stratified_subsample(tr, prob.y, cap_tr, seed + 1)
    va_s = stratified_subsample(va, prob.y, cap_va, seed + 2)
    return prob.subset(tr_s), prob.subset(va_s)


def _path(n: int, full: bool) -> list[int]:
    """Grid indices of the first pass: all of them, or every other one (whole decades) and the last."""
    if full:
        return list(range(n))
    return list(range(0, n, 2)) + ([n - 1] if (n - 1) % 2 else [])


def _walk(search: _Search, path: list[int], full: bool, n_val: float) -> None:
    """Fit the path strong to weak regularisation; unless ``full``, stop once the scores stop improving."""
    k, d = search.p_tr.k, search.p_tr.x.shape[1]
    ws = torch.zeros(k, d, dtype=torch.float64, device=search.p_tr.x.device)
    b = torch.zeros(k, dtype=torch.float64, device=search.p_tr.x.device)
    curv, prev_curv = search.p_tr.curvature, None
    best_acc, best_loss, stale = -math.inf, math.inf, 0
    for i in path:
        point = search.fit_index(i, "path" if full else "coarse", ws, b, curv)
        ws, b, acc, loss, c_i = point.ws, point.b, point.accuracy, point.loss, point.curvature
        # the next (weaker) value's solution is more confident: extrapolate the curvature geometrically
        curv = c_i if prev_curv is None else c_i * min(1.0, c_i / max(prev_curv, 1e-300))
        prev_curv = c_i
        # going on pays while the accuracy improves, or the loss does at an accuracy that can still be chosen
        se = std_error(best_acc, n_val) if best_acc > -math.inf else 0.0
        improved = acc > best_acc or (loss < best_loss and acc >= best_acc - se)
        best_acc, best_loss = max(best_acc, acc), min(best_loss, loss)
        stale = 0 if improved else stale + 1
        if not full and stale >= PATIENCE:
            break


def _refine(search: _Search, n_val: float) -> int:
    """Fit the half-decades either side of the chosen decade; return the index chosen then."""
    centre = search.pick(n_val)
    around = search.points[centre]
    for i in (centre - 1, centre + 1):
        if 0 <= i < len(search.cs) and i not in search.points:
            search.fit_index(i, "fine", around.ws, around.b, around.curvature)
    return search.pick(n_val)


def _refit_start(search: _Search, pick: int) -> tuple[float, torch.Tensor, torch.Tensor, float]:
    """The chosen l2 at the scale of all samples, and the refit's warm start (ws, b, curvature): the point
    nearest the refit's l2 at the subsample's scale, refitted there first when it is over a quarter decade off."""
    c_best = search.cs[pick]
    chosen = 0.0 if math.isinf(c_best) else 1.0 / (c_best * search.mass_full)
    point = search.points[pick]
    if not chosen > 0:
        return chosen, point.ws, point.b, point.curvature
    c_eq = c_best * search.mass_full / search.p_tr.mass
    near = min(search.points, key=lambda j: abs(math.log(search.cs[j] / c_eq)))
    point = search.points[near]
    if abs(math.log10(search.cs[near] / c_eq)) > 0.25:
        point = search.fit(c_eq, "refit warm start", point.ws, point.b, point.curvature)
        return chosen, point.ws, point.b, point.curvature
    ws, b = search.warm_start(c_eq, point.ws, point.b)
    return chosen, ws, b, point.curvature


def search_c(prob: Problem, tr: torch.Tensor, va: torch.Tensor, *, c_grid: Sequence[float] | None,
             l2_grid: Sequence[float] | None, seed: int, max_train: int, use_pre: bool,
             progress: bool) -> GridResult:
    """Search C for the raw-feature problem ``prob`` on its inner split (row indices ``tr``, ``va``).

    Small problems fit every grid value, large ones go coarse to fine (see the module docstring).
    """
    from tqdm.auto import tqdm

    t_setup = time.perf_counter()
    p_tr, p_va = _inner_problems(prob, tr, va, seed, max_train)
    s = correlation(p_tr.x, seed) if use_pre else None
    t_setup = time.perf_counter() - t_setup
    n_val = p_va.effective_size()
    cs = c_values(c_grid, l2_grid, prob.mass)
    full = p_tr.x.shape[0] * p_tr.x.shape[1] <= FULL_GRID_WORK or len(cs) <= 3
    info = {"inner_split": {"train": int(tr.numel()), "val": int(va.numel()), "grid_train": int(p_tr.x.shape[0]),
                            "grid_val": int(p_va.x.shape[0])},
            "grid_search": "full" if full else "coarse-to-fine", "selection_rule": SELECTION_RULE}
    t_grid = time.perf_counter()
    path = _path(len(cs), full)
    bar = tqdm(total=len(path) + (0 if full else 2), desc="head fit: C grid", disable=not logs.progress(progress), leave=False)
    search = _Search(p_tr, p_va, s, cs, prob.mass, bar)
    _walk(search, path, full, n_val)
    pick = search.pick(n_val) if full else _refine(search, n_val)
    l2, ws, b, curvature = _refit_start(search, pick)
    bar.close()
    return GridResult(l2=l2, val_accuracy=search.points[pick].accuracy, ws=ws, b=b, correlation=s,
                      curvature=curvature, records=search.records, info=info,
                      timing={"grid_setup": t_setup, "grid": time.perf_counter() - t_grid})
