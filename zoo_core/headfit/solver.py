"""One L-BFGS fit of the head for a fixed L2 strength, in the preconditioned coordinates of :mod:`.precond`.

Full-batch L-BFGS (two-loop recursion, history :data:`HISTORY`) with an Armijo backtracking line search
(safeguarded quadratic interpolation). The first step is scaled by the softmax curvature
(:func:`.precond.step0`), later ones by the usual ``s.y / y.y``.

Convergence: a fit stops when its relative gradient ``max|dF/dW| / max(|dCE/dW|, |l2 W|)`` is small, when an
iteration lowers the objective by less than ``ftol`` (times ``max(1, |F|)``), or when no step lowers it
measurably (float32 resolution); only hitting ``max_iter`` counts as not converged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import TrainingError
from .objective import Problem
from .precond import Correlation, Precond, gamma, step0

HISTORY = 10  # L-BFGS history size


@dataclass
class Solve:
    """What one L-BFGS run returns."""

    ws: torch.Tensor  # standardised-space weight (float64 [K, D])
    b: torch.Tensor  # bias (float64 [K])
    iterations: int
    evaluations: int
    converged: bool  # stopped on a tolerance (or at the loss's float32 resolution), not on max_iter
    stop: str  # "gradient", "loss change", "resolution" or "max_iter"
    optimality: float  # relative gradient |grad| / max(|grad CE|, |l2 W|) at the end (max norms)


class _Objective:
    """``F = CE + (l2 / 2) |W|^2`` of the flat preconditioned parameters ``v = (U, b)``."""

    def __init__(self, prob: Problem, pre: Precond, l2: float, k: int, d: int):
        self.prob, self.pre, self.l2, self.k, self.d = prob, pre, l2, k, d
        self.bad: list[str] = []  # non-finite losses met (the line search backs off from them)

    def __call__(self, v: torch.Tensor) -> tuple[float, torch.Tensor, float]:
        """(F, dF/dv, relative gradient) at ``v``; (inf, 0, inf) where the loss is not finite."""
        k, d, l2 = self.k, self.d, self.l2
        u, b = v[:k * d].view(k, d), v[k * d:]
        ws = self.pre.to_w(u)
        loss, g_ce, g_b = self.prob.loss_grad(ws, b)
        if not math.isfinite(loss):
            self.bad.append(f"loss {loss}")
            return math.inf, torch.zeros_like(v), math.inf
        reg = l2 * ws
        g_w = g_ce + reg
        scale = max(float(g_ce.abs().max()), float(reg.abs().max()), 1e-12)
        opt = max(float(g_w.abs().max()), float(g_b.abs().max())) / scale
        loss += 0.5 * l2 * float((ws * ws).sum())
        return loss, torch.cat([self.pre.grad_u(g_w).reshape(-1), g_b]), opt


class _History:
    """The L-BFGS memory: the last :data:`HISTORY` steps ``s`` and gradient changes ``y``."""

    def __init__(self) -> None:
        self.s: list[torch.Tensor] = []
        self.y: list[torch.Tensor] = []

    def direction(self, g: torch.Tensor, first_step: float) -> tuple[torch.Tensor, float]:
        """Search direction ``d = -H g`` (two-loop recursion) and ``g . d``; steepest descent if ``d`` is not
        a descent direction (numerical trouble: the memory is then cleared)."""
        q = -g
        alphas = []
        for s_i, y_i in zip(reversed(self.s), reversed(self.y)):
            a = float(s_i @ q) / float(y_i @ s_i)
            alphas.append(a)
            q = q - a * y_i
        if self.s:
            q = q * (float(self.s[-1] @ self.y[-1]) / float(self.y[-1] @ self.y[-1]))
        else:  # first step: ``first_step`` ~ the inverse curvature of the preconditioned problem
            q = q * first_step
        for s_i, y_i, a in zip(self.s, self.y, reversed(alphas)):
            q = q + (a - float(y_i @ q) / float(y_i @ s_i)) * s_i
        gd = float(g @ q)
        if not gd < 0:
            self.s.clear()
            self.y.clear()
            q = -g * min(1.0, 1.0 / max(float(g.abs().sum()), 1e-300))
            gd = float(g @ q)
        return q, gd

    def add(self, s_vec: torch.Tensor, y_vec: torch.Tensor) -> None:
        """Remember a step if it satisfies the curvature condition, forgetting the oldest beyond HISTORY."""
        sy = float(s_vec @ y_vec)
        if sy > 1e-10 * float(y_vec @ y_vec):
            self.s.append(s_vec)
            self.y.append(y_vec)
            if len(self.s) > HISTORY:
                self.s.pop(0)
                self.y.pop(0)


def _line_search(fg: _Objective, v: torch.Tensor, f: float, q: torch.Tensor, gd: float
                 ) -> tuple[tuple[torch.Tensor, float, torch.Tensor, float] | None, int]:
    """Backtracking (Armijo) along ``q``, step 1 first (L-BFGS steps are well scaled after the first).

    Returns ((v, F, gradient, relative gradient) at the accepted point, or None if no step lowered F
    measurably) and the number of evaluations.
    """
    t = 1.0
    for evals in range(1, 31):
        v_new = v + t * q
        f_new, g_new, opt_new = fg(v_new)
        if f_new <= f + 1e-4 * t * gd:
            return (v_new, f_new, g_new, opt_new), evals
        if math.isfinite(f_new):  # minimiser of the quadratic through f, gd and f_new, safeguarded
            denom = 2 * (f_new - f - gd * t)
            t_q = -gd * t * t / denom if denom > 0 else 0.5 * t
            t = min(0.5 * t, max(0.1 * t, t_q))
        else:
            t *= 0.1
    return None, 30


def fit_one(prob: Problem, pre: Precond, l2: float, ws0: torch.Tensor, b0: torch.Tensor, max_iter: int,
            rtol: float, ftol: float, first_step: float = 1.0) -> Solve:
    """Minimise the objective from (ws0, b0) by L-BFGS in the preconditioned coordinates ``U``.

    Stops when the relative gradient ``max|dF/dW, dF/db| / max(max|dCE/dW|, max|l2 W|)`` falls to ``rtol``
    (scale-free: the same test for strong and weak regularisation), when an iteration lowers the loss by
    at most ``ftol * max(1, |F|)``, or when no step along the search direction lowers the loss measurably
    (the float32 resolution of the loss: nothing left to gain). The first step is ``-first_step * gradient``.
    """
    k, d = ws0.shape
    fg = _Objective(prob, pre, l2, k, d)
    v = torch.cat([pre.to_u(ws0).reshape(-1), b0]).to(torch.float64)
    f, g, opt = fg(v)
    evals, it, stop = 1, 0, "max_iter"
    if not math.isfinite(f):
        raise TrainingError(f"head fit: the loss is {f} at the starting point (l2={l2:g}); check the features "
                            "for extreme values")
    hist = _History()
    if opt <= rtol:
        stop = "gradient"
    while stop == "max_iter" and it < max_iter:
        q, gd = hist.direction(g, first_step)
        step, n_evals = _line_search(fg, v, f, q, gd)
        evals += n_evals
        if step is None:
            stop = "resolution"
            break
        it += 1
        v_new, f_new, g_new, opt_new = step
        hist.add(v_new - v, g_new - g)
        decrease = f - f_new
        v, f, g, opt = v_new, f_new, g_new, opt_new
        if opt <= rtol:
            stop = "gradient"
        elif decrease <= ftol * max(1.0, abs(f)):
            stop = "loss change"
    ws = pre.to_w(v[:k * d].view(k, d))
    if fg.bad and not torch.isfinite(ws).all():
        raise TrainingError(f"head fit diverged (non-finite {fg.bad[0]}) at l2={l2:g}; check the features for "
                            "extreme values or pass a larger l2 to fit_linear_head")
    return Solve(ws, v[k * d:].clone(), it, evals, stop != "max_iter", stop, opt)


def fit_l2(prob: Problem, s: Correlation | None, l2: float, ws0: torch.Tensor, b0: torch.Tensor, curvature: float,
           *, max_iter: int, rtol: float, ftol: float) -> Solve:
    """:func:`fit_one` preconditioned by correlation ``s`` with the shift and first step for ``curvature``."""
    pre = Precond(s, gamma(l2, curvature))
    return fit_one(prob, pre, l2, ws0, b0, max_iter, rtol, ftol, step0(curvature))
