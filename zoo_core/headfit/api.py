"""The public entry point of the head fit, :func:`fit_linear_head`, its input checks and its result.

It validates the inputs, turns sample/class weights into one weight per row, drops classes without samples
(their rows get zero weight and a bias below every training logit), standardises (:func:`.objective.moments`),
picks the L2 strength (given; the C search of :mod:`.grid`; or :data:`DEFAULT_C` when the training set is too
small to hold out an inner split), refits on all samples (:func:`.solver.fit_l2`, tolerance :data:`RTOL` and
``tol``) and returns a :class:`HeadFit` whose weight and bias act on the *raw* features (the standardisation
folded in).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from .. import logs
from ..errors import DataError
from . import objective
from .grid import GRID_MAX_TRAIN, GridResult, search_c
from .objective import Problem, moments
from .precond import PRECOND_MAX_DIM, Correlation, LowRank, sample_correlation
from .solver import Solve, fit_l2
from .split import stratified_split

DEFAULT_C = 0.1  # used when the training set is too small to hold out an inner validation split
RTOL = 1e-3  # relative-gradient tolerance of the refit (see solver.fit_one)


@dataclass
class HeadFit:
    """Result of :func:`fit_linear_head`: a linear head acting on raw features, and how it was chosen."""

    weight: torch.Tensor  # [C, D] float32, acts on raw features (standardisation folded in)
    bias: torch.Tensor  # [C] float32
    l2: float  # L2 strength of the final refit (from the chosen C, or the one given)
    grid: list[dict]  # per candidate: C, l2 (refit scale), val_accuracy, val_loss, iterations, seconds, …
    iterations: int  # L-BFGS iterations of the final refit
    seconds: float  # wall time of the whole fit, grid search included
    method: str = "lbfgs"
    selection: str = "grid"  # "grid", "given" (l2 passed in) or "default" (too few samples to split)
    val_accuracy: float | None = None  # inner-val accuracy of the chosen value
    train_accuracy: float | None = None  # accuracy of the final head on all training features
    train_loss: float | None = None  # its (weighted, smoothed) cross entropy
    converged: bool = True  # the final refit stopped on tolerance, not on max_iter
    info: dict[str, Any] = field(default_factory=dict)  # sizes and settings, copied into config()
    C: float | None = None  # scikit-learn's C of the final refit: 1 / (l2 * total sample weight)

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear(D, C)`` holding the fitted weight and bias (float32, on the weight's device)."""
        c, d = self.weight.shape
        layer = nn.Linear(d, c, device=self.weight.device)
        with torch.no_grad():
            layer.weight.copy_(self.weight)
            layer.bias.copy_(self.bias)
        return layer

    def config(self) -> dict:
        """JSON-ready record of the fit: method, chosen l2 and C, grid results, iterations, timing."""
        n = self.info.get("n_samples")
        c = self.C if self.C is not None else (1.0 / (self.l2 * n)) if n and self.l2 > 0 else None
        return {
            "method": f"{self.method} (multinomial logistic regression, full batch, standardised features)",
            "selection": self.selection,
            "l2": self.l2,
            "C": c,
            "val_accuracy": self.val_accuracy,
            "train_accuracy": self.train_accuracy,
            "train_loss": self.train_loss,
            "iterations": self.iterations,
            "converged": self.converged,
            "seconds": round(self.seconds, 4),
            "grid": [dict(g) for g in self.grid],
            **self.info,
        }


# ----------------------------------------------------------------------------------------------------
# inputs


def _check_data(x: Any, y: Any, num_classes: int) -> torch.Tensor:
    """Check the features and labels; return the labels as int64 on the features' device."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise DataError(f"fit_linear_head: features must be a 2-D tensor [N, D], got "
                        f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not x.is_floating_point():
        raise DataError(f"fit_linear_head: features must be floating point, got {x.dtype}")
    y = torch.as_tensor(y)
    if y.dim() != 1 or y.numel() != x.shape[0]:
        raise DataError(f"fit_linear_head: labels must be 1-D with one entry per feature row "
                        f"({x.shape[0]}), got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise DataError(f"fit_linear_head: labels must be integer class indices, got {y.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"fit_linear_head: no features to fit (shape {tuple(x.shape)})")
    if num_classes < 1:
        raise DataError(f"fit_linear_head: num_classes must be >= 1, got {num_classes}")
    y = y.to(device=x.device, dtype=torch.long)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"fit_linear_head: labels must lie in [0, {num_classes - 1}], found {lo}…{hi}")
    return y


def _check_options(l2: float | None, l2_grid: Sequence[float] | None, c_grid: Sequence[float] | None,
                   val_fraction: float, label_smoothing: float, max_iter: int, tol: float,
                   grid_max_train: int) -> None:
    """Check the numeric options of :func:`fit_linear_head`."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"fit_linear_head: val_fraction must be in [0, 1), got {val_fraction}")
    if not 0.0 <= label_smoothing < 1.0:
        raise DataError(f"fit_linear_head: label_smoothing must be in [0, 1), got {label_smoothing}")
    if l2 is not None and not (l2 >= 0 and math.isfinite(l2)):
        raise DataError(f"fit_linear_head: l2 must be a finite number >= 0, got {l2}")
    if l2_grid is not None and c_grid is not None:
        raise DataError("fit_linear_head: pass l2_grid or c_grid, not both")
    for name, values in (("l2_grid", l2_grid), ("c_grid", c_grid)):
        if values is not None:
            values = [float(v) for v in values]
            low = 0.0 if name == "l2_grid" else math.ulp(0.0)
            if not values or any(not (v >= low and math.isfinite(v)) for v in values):
                what = ">= 0" if name == "l2_grid" else "> 0"
                raise DataError(f"fit_linear_head: {name} must be a non-empty list of finite values {what}, "
                                f"got {values}")
    if max_iter < 1 or not tol > 0:
        raise DataError(f"fit_linear_head: need max_iter >= 1 and tol > 0, got {max_iter}, {tol}")
    if grid_max_train < 1:
        raise DataError(f"fit_linear_head: grid_max_train must be >= 1, got {grid_max_train}")


def _weights(y: torch.Tensor, num_classes: int, sample_weight: Any, class_weight: Any) -> torch.Tensor | None:
    """One weight per row from ``sample_weight`` times ``class_weight`` (checked); None when both are None."""
    n = y.numel()
    w = None
    if sample_weight is not None:
        w = torch.as_tensor(sample_weight, dtype=torch.float32).reshape(-1)
        if w.numel() != n:
            raise DataError(f"fit_linear_head: sample_weight has {w.numel()} entries but there are {n} samples")
        if not torch.isfinite(w).all() or (w < 0).any():
            raise DataError("fit_linear_head: sample_weight must be finite and non-negative")
    if class_weight is not None:
        if isinstance(class_weight, str):
            if class_weight != "balanced":
                raise DataError(f"fit_linear_head: class_weight={class_weight!r}; use 'balanced', a sequence "
                                f"of {num_classes} weights, or None")
            counts = torch.bincount(y.cpu(), minlength=num_classes).to(torch.float32)
            present = counts > 0
            cw = torch.zeros(num_classes)
            cw[present] = n / (int(present.sum()) * counts[present])
        else:
            cw = torch.as_tensor(class_weight, dtype=torch.float32).reshape(-1)
            if cw.numel() != num_classes or not torch.isfinite(cw).all() or (cw < 0).any():
                raise DataError(f"fit_linear_head: class_weight must hold {num_classes} finite non-negative "
                                "weights (one per class)")
        cwy = cw[y.cpu()]
        w = cwy if w is None else w * cwy
    if w is not None and float(w.sum()) <= 0:
        raise DataError("fit_linear_head: sample/class weights sum to zero; nothing to fit")
    return None if w is None else w.to(y.device)


def _classes(y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """(classes with samples, classes without — warned about —, labels renumbered over the former)."""
    counts = torch.bincount(y.cpu(), minlength=num_classes)
    present = (counts > 0).nonzero().flatten()
    absent = (counts == 0).nonzero().flatten().tolist()
    if absent:
        warnings.warn(f"fit_linear_head: classes {absent[:10]}{'…' if len(absent) > 10 else ''} have no "
                      "training samples; their head rows get zero weight and a bias below every training "
                      "logit", stacklevel=3)
    remap = torch.full((num_classes,), -1, dtype=torch.long)
    remap[present] = torch.arange(present.numel())
    return present, absent, remap.to(y.device)[y]


# ----------------------------------------------------------------------------------------------------
# choosing l2, refitting, the head on raw features


@dataclass
class _Choice:
    """The l2 of the final refit, how it was chosen, and the C search behind it (when there was one)."""

    l2: float
    selection: str  # "grid", "given" or "default"
    grid: GridResult | None = None


def _choose(prob: Problem, y: torch.Tensor, num_classes: int, l2: float | None, val_fraction: float, seed: int,
            **search: Any) -> _Choice:
    """The given ``l2``; else the C search on a stratified inner split; else (too few samples) DEFAULT_C."""
    if l2 is not None:
        return _Choice(float(l2), "given")
    tr, va = stratified_split(y, num_classes, val_fraction, seed)
    if va.numel() == 0 or tr.numel() == 0:
        return _Choice(1.0 / (DEFAULT_C * prob.mass), "default")
    result = search_c(prob, tr, va, seed=seed, **search)
    return _Choice(result.l2, "grid", result)


def _refit_start(prob: Problem, choice: _Choice, seed: int,
                 use_pre: bool) -> tuple[torch.Tensor, torch.Tensor, Correlation | None, float]:
    """Where the refit starts (ws, b), its correlation matrix and curvature: the search's, or from scratch."""
    if choice.grid is not None:
        g = choice.grid
        return g.ws, g.b, g.correlation, g.curvature
    k, d = prob.k, prob.x.shape[1]
    ws = torch.zeros(k, d, dtype=torch.float64, device=prob.x.device)
    b = torch.zeros(k, dtype=torch.float64, device=prob.x.device)
    return ws, b, sample_correlation(prob, seed) if use_pre else None, prob.curvature


def _refit(prob: Problem, l2: float, start: tuple[torch.Tensor, torch.Tensor, Correlation | None, float],
           max_iter: int, tol: float, progress: bool, info: dict[str, Any]) -> Solve:
    """The final fit on all samples; records it in ``info`` and warns if it hit ``max_iter``."""
    from tqdm.auto import tqdm

    ws, b, s, curv = start
    bar = tqdm(total=1, desc=f"head fit: refit l2={l2:.3g}", disable=not logs.progress(progress), leave=False)
    sol = fit_l2(prob, s, l2, ws, b, curv, max_iter=max_iter, rtol=RTOL, ftol=tol)
    if isinstance(s, LowRank):
        info["preconditioner"] = f"correlation-low-rank (rank {s.lam.numel()})"
    info["refit"] = {"evaluations": sol.evaluations, "stop": sol.stop, "optimality": float(f"{sol.optimality:.3g}")}
    bar.update(1)
    bar.close()
    if not sol.converged:
        warnings.warn(f"fit_linear_head: L-BFGS stopped at max_iter={max_iter} before reaching tol={tol} "
                      f"(l2={l2:g}); the head is usable but may improve with a larger max_iter", stacklevel=3)
    return sol


def _raw_head(prob: Problem, ws: torch.Tensor, b: torch.Tensor, present: torch.Tensor, absent: list[int],
              num_classes: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """(weight, bias) over all classes on raw features, centred bias, and the final scores on all samples."""
    x = prob.x
    final = prob.evaluate(ws, b)
    w_raw, b_raw = prob.to_raw(ws, b)
    shift = float(b_raw.mean())
    b_raw = b_raw - shift  # softmax is shift invariant; keep the bias centred
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float32, device=x.device)
    bias = torch.zeros(num_classes, dtype=torch.float32, device=x.device)
    present_d = present.to(x.device)
    weight[present_d] = w_raw
    bias[present_d] = b_raw
    if absent:
        bias[torch.tensor(absent, device=x.device)] = final["zmin"] - shift - 10.0
    return weight, bias, final


# ----------------------------------------------------------------------------------------------------
# public entry point


def fit_linear_head(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, l2: float | None = None,
                    l2_grid: Sequence[float] | None = None, val_fraction: float = 0.2, seed: int = 0,
                    max_iter: int = 200, tol: float = 1e-6, label_smoothing: float = 0.0,
                    sample_weight: torch.Tensor | Sequence[float] | None = None,
                    class_weight: str | Sequence[float] | torch.Tensor | None = None,
                    progress: bool = False, c_grid: Sequence[float] | None = None,
                    grid_max_train: int = GRID_MAX_TRAIN) -> HeadFit:
    """Fit a converged L2-regularised softmax head on features ``x`` [N, D] with labels ``y`` [N].

    ``l2`` fixes the L2 strength (no search). Otherwise the regularisation is picked on a stratified
    split (:func:`stratified_split`: ``val_fraction`` held out, seeded by ``seed``; its training part
    subsampled to ``grid_max_train`` rows) from ``c_grid`` (scikit-learn's ``C``; default
    :data:`DEFAULT_C_GRID`, 1e-4…10 by half-decades) or ``l2_grid`` (L2 strengths of the final refit,
    ``C = 1 / (l2 * N)``), by the rule in :mod:`zoo_core.headfit.grid`, and the head is refit on all samples
    with the chosen ``C``. The refit stops on the tolerances described in :mod:`zoo_core.headfit.solver`
    (``tol``: objective change per iteration) or after ``max_iter`` L-BFGS iterations (then ``converged``
    is False and a warning says so). ``sample_weight`` and ``class_weight`` ("balanced" or one weight per
    class) weight the loss, the standardisation and the inner-val scores. ``x`` may be
    float16/bfloat16/float32, strided or memory-mapped. The record of the fit (chosen ``l2`` and ``C``,
    every grid fit, timings) is :meth:`HeadFit.config`.
    """
    t0 = time.perf_counter()
    y = _check_data(x, y, num_classes)
    _check_options(l2, l2_grid, c_grid, val_fraction, label_smoothing, max_iter, tol, grid_max_train)
    w = _weights(y, num_classes, sample_weight, class_weight)
    present, absent, yk = _classes(y, num_classes)
    k, (n, d) = present.numel(), x.shape
    mean, inv_std = moments(x, w)
    timing: dict[str, float] = {"moments": time.perf_counter() - t0}
    prob = Problem(x, yk, w, k, label_smoothing, mean, inv_std)
    use_pre = d <= PRECOND_MAX_DIM
    info: dict[str, Any] = {
        "n_samples": n, "n_features": d, "num_classes": num_classes, "val_fraction": val_fraction,
        "seed": seed, "max_iter": max_iter, "tol": tol, "label_smoothing": label_smoothing,
        "class_weight": class_weight if isinstance(class_weight, str) or class_weight is None else "custom",
        "sample_weight": sample_weight is not None, "classes_without_samples": absent,
        "preconditioner": "correlation-cholesky" if use_pre else f"none (D > {PRECOND_MAX_DIM})",
        "std_floor": f"{objective.STD_FLOOR} x median feature std",  # read at call time, as moments() does
    }
    ws = torch.zeros(k, d, dtype=torch.float64, device=x.device)
    b = torch.zeros(k, dtype=torch.float64, device=x.device)
    iterations, converged = 0, True
    if k == 1:  # one class: nothing to learn but the bias
        choice = _Choice(float(l2), "given") if l2 is not None else _Choice(0.0, "default")
        info["preconditioner"] = "none"
    else:
        choice = _choose(prob, y, num_classes, l2, val_fraction, seed, c_grid=c_grid, l2_grid=l2_grid,
                         max_train=grid_max_train, use_pre=use_pre, progress=progress)
        if choice.grid is not None:
            info.update(choice.grid.info)
        start = _refit_start(prob, choice, seed, use_pre)
        t_refit = time.perf_counter()
        sol = _refit(prob, choice.l2, start, max_iter, tol, progress, info)
        ws, b, iterations, converged = sol.ws, sol.b, sol.iterations, sol.converged
        timing["refit"] = time.perf_counter() - t_refit
    weight, bias, final = _raw_head(prob, ws, b, present, absent, num_classes)
    if choice.grid is not None:
        timing.update(choice.grid.timing)
    timing["total"] = time.perf_counter() - t0
    info["timing"] = {key: round(v, 4) for key, v in timing.items()}
    chosen = choice.l2
    return HeadFit(weight=weight, bias=bias, l2=float(chosen), grid=choice.grid.records if choice.grid else [],
                   iterations=iterations, seconds=time.perf_counter() - t0, selection=choice.selection,
                   val_accuracy=choice.grid.val_accuracy if choice.grid else None,
                   train_accuracy=round(final["accuracy"], 6), train_loss=round(final["loss"], 6),
                   converged=converged, info=info, C=1.0 / (chosen * prob.mass) if chosen > 0 else None)

