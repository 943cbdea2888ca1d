"""Converged linear-head fit on cached features: multinomial logistic regression by full-batch L-BFGS.

The default head fit of a feature-extraction run (no epoch count given). It follows the standard
linear-probe protocol (Kornblith et al. 2019): an L2-regularised multinomial logistic regression trained
to convergence, its regularisation strength picked on a stratified, seeded split of the training set, then
refit on all of it. The objective, on standardised features ``z = (x - mean) / std``, is

    sum_i w_i * CE(W z_i + b, y_i) / sum_i w_i  +  (l2 / 2) * ||W||_F^2        (bias unpenalised)

so ``l2`` is the usual weight-decay coefficient, and scikit-learn's ``LogisticRegression(C=...)`` on
standardised features solves the same problem for ``C = 1 / (l2 * sum_i w_i)`` (``1 / (l2 * n)``
unweighted). The grid is expressed in ``C``: the same ``C`` means the same prior whatever the number of
samples, so a value chosen on the inner split carries over to the refit on all samples (as in
scikit-learn's refit). The returned weight and bias act on the *raw* features: the standardisation is
folded in.

Choosing ``C``: every value is fitted on the inner-train part and scored on the inner-val part; the
chosen one has the lowest inner-val loss among the values whose inner-val accuracy is within one binomial
standard error of the best accuracy. Accuracy alone is too noisy on small inner splits (a few hundred
images: its argmax jumps between far-apart values from one seed to the next); the loss among the
statistically tied values is a stable tie-break.

Speed (50,000 x 2,048 features, 10 classes: seconds on 2 CPU cores):

* the grid search runs on standardised in-memory copies of the inner split, subsampled (stratified,
  seeded) to at most :data:`GRID_MAX_TRAIN` / :data:`GRID_MAX_VAL` rows: plenty to rank values of ``C``;
* small problems fit the whole grid; large ones go coarse to fine: whole decades of ``C``, strong to weak
  regularisation, until the inner-val scores stop improving, then the half-decades around the best;
* every fit is warm-started from the solutions already found, inter-/extrapolated in log C (a
  continuation predictor), and its first step is scaled by the softmax curvature;
* L-BFGS runs in a preconditioned parameterisation ``W = U L^{-1}`` with ``L L^T = S + gamma I``, ``S``
  the correlation matrix of the standardised features (a row subsample) and ``gamma`` matched to the
  regularisation and the curvature: it whitens the strongly correlated directions of deep features, so
  a fit needs tens of iterations instead of hundreds;
* the refit on all samples starts from the subsample's solution *with the refit's l2* (the same
  objective up to sampling) and reads the features in place, a cache-sized row chunk at a time (forward
  and backward matmuls of a chunk while it is in cache; float16/bfloat16, memory-mapped or strided
  features converted a chunk at a time, never copied whole).

Convergence: a fit stops when its relative gradient ``max|dF/dW| / max(|dCE/dW|, |l2 W|)`` is small,
when an iteration lowers the objective by less than ``tol`` (times ``max(1, |F|)``), or when no step
lowers it measurably (float32 resolution); only hitting ``max_iter`` counts as not converged.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from .errors import DataError, TrainingError

# Default grid in scikit-learn's C (= 1 / (l2 * n)): half-decades from strong to weak regularisation.
DEFAULT_C_GRID: tuple[float, ...] = tuple(10.0 ** (k / 2) for k in range(-8, 3))  # 1e-4 … 10
DEFAULT_C = 0.1  # used when the training set is too small to hold out an inner validation split
GRID_MAX_TRAIN = 10_000  # inner-train rows the grid search fits on (a stratified subsample above this)
GRID_MAX_VAL = 5_000  # inner-val rows it scores on
_GRID_BYTES = 320 << 20  # … and at most this much float32 for the two standardised copies together
_PATIENCE = 1  # coarse (decade) values in a row without improvement before the path is cut
_FULL_GRID_WORK = 4_000_000  # grid-train rows x D up to which every grid value is fitted (cheap anyway)
_RTOL = 1e-3  # relative-gradient tolerance of the refit (see _fit_one)
_GRID_RTOL = 1e-2  # … and of the grid fits (only their ranking matters)
_GRID_FTOL = 1e-7  # loss-change tolerance of the grid fits
_GRID_MAX_ITER = 100
_CHUNK_BYTES = 4 << 20  # row chunk of the passes: fwd and bwd matmuls of a chunk run while it is in cache
_PRECOND_MAX_DIM = 4096  # above this the D x D preconditioner costs more than it saves
_PRECOND_ROWS = 2048  # rows used to estimate the correlation matrix
_HISTORY = 10  # L-BFGS history size
_MIN_CURVATURE = 1e-5  # floor of the curvature estimate in the preconditioner shift (see _gamma)
_GAMMA_FACTOR = 3.0  # gamma = this * l2 / curvature (measured: 1 to 30 work, 3 needs the fewest evaluations)


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
# passes over the features


def _chunk_rows(d: int, device: torch.device) -> int:
    """Rows per chunk: ~_CHUNK_BYTES of float32 on CPU (cache-sized), large blocks on accelerators."""
    if device.type != "cpu":
        return 1 << 16
    return max(64, _CHUNK_BYTES // (4 * max(d, 1)))


def _chunks(x: torch.Tensor, idx: torch.Tensor | None, rows: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (start, stop, float32 chunk) over all rows, or over the sorted row indices ``idx``."""
    n = x.shape[0] if idx is None else idx.numel()
    for s in range(0, n, rows):
        e = min(s + rows, n)
        xc = x[s:e] if idx is None else x.index_select(0, idx[s:e].to(x.device))
        yield s, e, xc.to(torch.float32)


class _Problem:
    """The data side of the objective: features (never copied whole), labels, weights, standardisation.

    ``mean``/``inv_std`` (float64 [D]) map raw features to standardised ones; ``None`` when ``x`` is
    already standardised (the in-memory copies of the grid search).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, num_classes: int,
                 smoothing: float, mean: torch.Tensor | None = None, inv_std: torch.Tensor | None = None):
        self.x, self.y, self.w = x, y, w
        self.k = num_classes
        self.smoothing = smoothing
        self.mean64, self.inv_std64 = mean, inv_std
        self.rows = _chunk_rows(x.shape[1], x.device)
        self.mass = float(x.shape[0]) if w is None else float(w.sum(dtype=torch.float64))
        self.curvature = (1 - 1 / num_classes) / num_classes  # E[sum_k p_k (1 - p_k)] / K at uniform p
        self._neg: torch.Tensor | None = None

    def _raw(self, ws: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight/bias (float32) on ``x`` equivalent to standardised-space ``ws``/``b`` (float64)."""
        if self.mean64 is None:
            return ws.to(torch.float32), b.to(torch.float32)
        w_raw = ws * self.inv_std64
        b_raw = b - w_raw @ self.mean64
        return w_raw.to(torch.float32), b_raw.to(torch.float32)

    def _neg_target(self, rows: int) -> torch.Tensor:
        """A [rows, 1] column of ``-(1 - smoothing)``: what the true class adds to the softmax gradient."""
        if self._neg is None or self._neg.shape[0] < rows:
            self._neg = torch.full((max(rows, self.rows), 1), -(1.0 - self.smoothing), device=self.x.device)
        return self._neg[:rows]

    def _nll(self, logp: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
        """Per-row (smoothed) cross entropy from log-probabilities."""
        nll = logp.gather(1, yc[:, None]).squeeze(1).neg_()
        if self.smoothing:
            nll = (1 - self.smoothing) * nll - self.smoothing * logp.mean(dim=1)
        return nll

    def loss_grad(self, ws: torch.Tensor, b: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Mean weighted CE and its gradients w.r.t. standardised-space ``ws`` and ``b`` (float64).

        One pass: per cache-sized row chunk the logits, the softmax gradient and its product with the chunk,
        with as few (tiny) elementwise ops per chunk as possible.
        """
        w_raw, b_raw = self._raw(ws, b)
        w_t = w_raw.T
        g_w = torch.zeros_like(w_raw)
        g_b = torch.zeros_like(b_raw)
        total = torch.zeros((), dtype=torch.float64, device=self.x.device)
        for s, e, xc in _chunks(self.x, None, self.rows):
            yc = self.y[s:e]
            logp = torch.log_softmax(torch.addmm(b_raw, xc, w_t), dim=1)
            nll = self._nll(logp, yc)
            g = logp.exp_()
            g.scatter_add_(1, yc[:, None], self._neg_target(e - s))
            if self.smoothing:
                g.sub_(self.smoothing / self.k)
            if self.w is not None:
                wc = self.w[s:e]
                nll = nll * wc
                g.mul_(wc[:, None])
            total += nll.sum(dtype=torch.float64)
            g_w.addmm_(g.T, xc)
            g_b += g.sum(0)
        g_w64 = g_w.to(torch.float64) / self.mass
        g_b64 = g_b.to(torch.float64) / self.mass
        if self.mean64 is not None:  # chain rule through the folding: w_raw = ws * inv_std, b_raw = b - w_raw @ mean
            g_w64 = (g_w64 - g_b64[:, None] * self.mean64) * self.inv_std64
        return float(total) / self.mass, g_w64, g_b64

    @torch.no_grad()
    def evaluate(self, ws: torch.Tensor, b: torch.Tensor, curvature: bool = False) -> dict[str, float]:
        """Weighted accuracy, weighted (smoothed) CE, the smallest logit and (if asked) the mean curvature.

        The curvature is ``E[sum_k p_k (1 - p_k)] / K``: the scale of the loss's Hessian (see _gamma).
        """
        w_raw, b_raw = self._raw(ws, b)
        correct, loss, curv = (torch.zeros((), dtype=torch.float64, device=self.x.device) for _ in range(3))
        zmin = torch.tensor(math.inf, device=self.x.device)
        for s, e, xc in _chunks(self.x, None, self.rows):
            yc = self.y[s:e]
            z = torch.addmm(b_raw, xc, w_raw.T)
            zmin = torch.minimum(zmin, z.min())
            hit = (z.argmax(1) == yc).to(torch.float32)
            logp = torch.log_softmax(z, dim=1)
            nll = self._nll(logp, yc)
            c = None
            if curvature:
                p = logp.exp_()
                c = (p - p.square()).sum(1)
            if self.w is not None:
                wc = self.w[s:e]
                nll, hit = nll * wc, hit * wc
                c = None if c is None else c * wc
            loss += nll.sum(dtype=torch.float64)
            correct += hit.sum(dtype=torch.float64)
            if c is not None:
                curv += c.sum(dtype=torch.float64)
        mass = max(self.mass, 1e-300)
        out = {"accuracy": float(correct) / mass, "loss": float(loss) / mass, "zmin": float(zmin)}
        if curvature:
            self.curvature = out["curvature"] = float(curv) / (mass * self.k)
        return out


# ----------------------------------------------------------------------------------------------------
# preconditioner


@dataclass
class _LowRank:
    """A correlation matrix of fewer rows than features, ``S = Q diag(lam) Q^T`` (``Q`` [D, r] orthonormal)."""

    q: torch.Tensor  # float64 [D, r]
    lam: torch.Tensor  # float64 [r], > 0


class _Precond:
    """``W = U M^{-1}`` with ``M M^T = S + gamma I``; identity when ``S`` is None.

    ``M`` is the Cholesky factor ``L`` of a dense ``S``, or for a low-rank ``S`` (:class:`_LowRank`, fewer
    rows than features) the symmetric square root ``sqrt(gamma) I + Q diag(sqrt(lam + gamma) - sqrt(gamma))
    Q^T``: O(K D r) to apply and nothing D x D to factorise. For a row ``w = u M^{-1}`` the quadratic form
    ``w S w^T`` is close to ``|u|^2`` where ``S`` dominates ``gamma``: L-BFGS sees a well-conditioned
    problem in ``U``.
    """

    def __init__(self, s: torch.Tensor | _LowRank | None, gamma: float):
        self.lower = None
        self.low_rank: _LowRank | None = None
        if s is None:
            return
        gamma = max(gamma, 1e-6)
        if isinstance(s, _LowRank):
            self.low_rank = s
            root, lam_root = math.sqrt(gamma), torch.sqrt(s.lam + gamma)
            self._root = root
            self._up = lam_root - root  # M = root I + Q diag(up) Q^T
            self._down = 1.0 / lam_root - 1.0 / root  # M^-1 = I / root + Q diag(down) Q^T
            return
        eye = torch.eye(s.shape[0], dtype=s.dtype, device=s.device)
        for _ in range(10):
            lower, info = torch.linalg.cholesky_ex(s + gamma * eye)
            if int(info) == 0 and bool(torch.isfinite(lower).all()):
                self.lower = lower
                return
            gamma *= 10
        # never reached for a PSD S; fall back to plain standardised coordinates

    def _low_rank_apply(self, a: torch.Tensor, scale: float, diag: torch.Tensor) -> torch.Tensor:
        q = self.low_rank.q.to(a.dtype)
        return a * scale + ((a @ q) * diag.to(a.dtype)) @ q.T

    def to_w(self, u: torch.Tensor) -> torch.Tensor:
        """``W = U M^{-1}`` (dense: ``W^T = L^{-T} U^T``)."""
        if self.low_rank is not None:
            return self._low_rank_apply(u, 1.0 / self._root, self._down)
        if self.lower is None:
            return u
        return torch.linalg.solve_triangular(self.lower.T, u.T.to(self.lower.dtype), upper=True).T.to(u.dtype)

    def to_u(self, w: torch.Tensor) -> torch.Tensor:
        """``U = W M``."""
        if self.low_rank is not None:
            return self._low_rank_apply(w, self._root, self._up)
        return w if self.lower is None else w @ self.lower.to(w.dtype)

    def grad_u(self, g_w: torch.Tensor) -> torch.Tensor:
        """``dF/dU = dF/dW M^{-T}`` (dense: its transpose is ``L^{-1} (dF/dW)^T``; low rank: ``M`` is symmetric)."""
        if self.low_rank is not None:
            return self.to_w(g_w)
        if self.lower is None:
            return g_w
        return torch.linalg.solve_triangular(self.lower, g_w.T.to(self.lower.dtype), upper=False).T.to(g_w.dtype)


def _gamma(l2: float, curvature: float) -> float:
    """Preconditioner shift for the Hessian ``~ c S + l2 I``, ``c`` the mean softmax curvature ``E[p (1 - p)]``.

    ``gamma = l2 / c`` would match it exactly; the curvature concentrates on the samples near the decision
    boundaries, so a larger shift (fewer directions whitened) works better in practice.
    """
    return _GAMMA_FACTOR * l2 / min(max(curvature, _MIN_CURVATURE), 0.25)


def _step0(curvature: float) -> float:
    """First L-BFGS step length: in the preconditioned coordinates the Hessian is ``~ c I`` (see _gamma)."""
    return 1.0 / min(max(curvature, _MIN_CURVATURE), 0.25)


def _correlation(z: torch.Tensor, seed: int) -> torch.Tensor | _LowRank:
    """Correlation matrix of standardised rows ``z``, on a seeded subsample of them.

    Dense (float32 [D, D]) when the subsample has at least as many rows as features; otherwise its
    eigendecomposition from the small [m, m] Gram matrix (:class:`_LowRank`), so that few images with
    wide features (a few hundred VGG rows of 4,096) never pay for a D x D factorisation.
    """
    n, d = z.shape
    m = min(n, _PRECOND_ROWS)
    gen = torch.Generator().manual_seed(seed + 7919)
    idx = torch.randperm(n, generator=gen)[:m].to(z.device)
    if m < d:
        zs = z.index_select(0, idx).to(torch.float64)
        lam, p = torch.linalg.eigh(zs @ zs.T / m)
        keep = lam > lam.max().clamp_min(1e-300) * 1e-10
        lam, p = lam[keep], p[:, keep]
        q = (zs.T @ p) / torch.sqrt(lam * m)  # unit columns: |zs^T p_i|^2 = m lam_i
        return _LowRank(q=q, lam=lam)
    zs = z.index_select(0, idx).to(torch.float32)
    s = zs.T @ zs
    s /= m
    return (s + s.T) / 2


# ----------------------------------------------------------------------------------------------------
# one L-BFGS fit


@dataclass
class _Solve:
    """What one L-BFGS run returns."""

    ws: torch.Tensor  # standardised-space weight (float64 [K, D])
    b: torch.Tensor  # bias (float64 [K])
    iterations: int
    evaluations: int
    converged: bool  # stopped on a tolerance (or at the loss's float32 resolution), not on max_iter
    stop: str  # "gradient", "loss change", "resolution" or "max_iter"
    optimality: float  # relative gradient |grad| / max(|grad CE|, |l2 W|) at the end (max norms)


def _fit_one(prob: _Problem, pre: _Precond, l2: float, ws0: torch.Tensor, b0: torch.Tensor, max_iter: int,
             rtol: float, ftol: float, step0: float = 1.0) -> _Solve:
    """Minimise the objective from (ws0, b0) by L-BFGS in the preconditioned coordinates ``U``.

    Stops when the relative gradient ``max|dF/dW, dF/db| / max(max|dCE/dW|, max|l2 W|)`` falls to ``rtol``
    (scale-free: the same test for strong and weak regularisation), when an iteration lowers the loss by
    at most ``ftol * max(1, |F|)``, or when no step along the search direction lowers the loss measurably
    (the float32 resolution of the loss: nothing left to gain). The first step is ``-step0 * gradient``.
    """
    k, d = ws0.shape
    bad: list[str] = []

    def fg(v: torch.Tensor) -> tuple[float, torch.Tensor, float]:
        u, b = v[:k * d].view(k, d), v[k * d:]
        ws = pre.to_w(u)
        loss, g_ce, g_b = prob.loss_grad(ws, b)
        if not math.isfinite(loss):
            bad.append(f"loss {loss}")
            return math.inf, torch.zeros_like(v), math.inf
        reg = l2 * ws
        g_w = g_ce + reg
        scale = max(float(g_ce.abs().max()), float(reg.abs().max()), 1e-12)
        opt = max(float(g_w.abs().max()), float(g_b.abs().max())) / scale
        loss += 0.5 * l2 * float((ws * ws).sum())
        return loss, torch.cat([pre.grad_u(g_w).reshape(-1), g_b]), opt

    v = torch.cat([pre.to_u(ws0).reshape(-1), b0]).to(torch.float64)
    f, g, opt = fg(v)
    evals, it, stop = 1, 0, "max_iter"
    if not math.isfinite(f):
        raise TrainingError(f"head fit: the loss is {f} at the starting point (l2={l2:g}); check the features "
                            "for extreme values")
    hist_s: list[torch.Tensor] = []
    hist_y: list[torch.Tensor] = []
    if opt <= rtol:
        stop = "gradient"
    while stop == "max_iter" and it < max_iter:
        # two-loop recursion: d = -H g with the L-BFGS inverse-Hessian estimate H
        q = -g
        alphas = []
        for s_i, y_i in zip(reversed(hist_s), reversed(hist_y)):
            a = float(s_i @ q) / float(y_i @ s_i)
            alphas.append(a)
            q = q - a * y_i
        if hist_s:
            q = q * (float(hist_s[-1] @ hist_y[-1]) / float(hist_y[-1] @ hist_y[-1]))
        else:  # first step: ``step0`` ~ the inverse curvature of the preconditioned problem
            q = q * step0
        for s_i, y_i, a in zip(hist_s, hist_y, reversed(alphas)):
            q = q + (a - float(y_i @ q) / float(y_i @ s_i)) * s_i
        gd = float(g @ q)
        if not gd < 0:  # not a descent direction (numerical trouble): restart from steepest descent
            hist_s.clear()
            hist_y.clear()
            q = -g * min(1.0, 1.0 / max(float(g.abs().sum()), 1e-300))
            gd = float(g @ q)
        # backtracking line search (Armijo), step 1 first: L-BFGS steps are well scaled after the first
        t, accepted = 1.0, False
        for _ in range(30):
            v_new = v + t * q
            f_new, g_new, opt_new = fg(v_new)
            evals += 1
            if f_new <= f + 1e-4 * t * gd:
                accepted = True
                break
            if math.isfinite(f_new):  # minimiser of the quadratic through f, gd and f_new, safeguarded
                denom = 2 * (f_new - f - gd * t)
                t_q = -gd * t * t / denom if denom > 0 else 0.5 * t
                t = min(0.5 * t, max(0.1 * t, t_q))
            else:
                t *= 0.1
        if not accepted:
            stop = "resolution"
            break
        it += 1
        s_vec, y_vec = v_new - v, g_new - g
        sy = float(s_vec @ y_vec)
        if sy > 1e-10 * float(y_vec @ y_vec):
            hist_s.append(s_vec)
            hist_y.append(y_vec)
            if len(hist_s) > _HISTORY:
                hist_s.pop(0)
                hist_y.pop(0)
        decrease = f - f_new
        v, f, g, opt = v_new, f_new, g_new, opt_new
        if opt <= rtol:
            stop = "gradient"
        elif decrease <= ftol * max(1.0, abs(f)):
            stop = "loss change"
    ws = pre.to_w(v[:k * d].view(k, d))
    if bad and not torch.isfinite(ws).all():
        raise TrainingError(f"head fit diverged (non-finite {bad[0]}) at l2={l2:g}; check the features for "
                            "extreme values or pass a larger l2 to fit_linear_head")
    return _Solve(ws, v[k * d:].clone(), it, evals, stop != "max_iter", stop, opt)


# ----------------------------------------------------------------------------------------------------
# inputs


def stratified_split(y: torch.Tensor, num_classes: int, val_fraction: float,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inner split of :func:`fit_linear_head`: seeded, per class ``round(n_c * val_fraction)`` held out,
    every class keeping at least one training sample. Returns sorted (train, val) row-index tensors (CPU)."""
    gen = torch.Generator().manual_seed(seed)
    y_cpu = y.cpu()
    order = torch.argsort(y_cpu, stable=True)
    counts = torch.bincount(y_cpu, minlength=num_classes).tolist()
    tr, va, start = [], [], 0
    for c in range(num_classes):
        n_c = counts[c]
        members = order[start:start + n_c]
        start += n_c
        if n_c == 0:
            continue
        members = members[torch.randperm(n_c, generator=gen)]
        n_val = min(int(math.floor(n_c * val_fraction + 0.5)), n_c - 1)
        va.append(members[:n_val])
        tr.append(members[n_val:])
    return torch.sort(torch.cat(tr)).values, torch.sort(torch.cat(va)).values


_stratified_split = stratified_split  # the name used before it was public


def _stratified_subsample(idx: torch.Tensor, y: torch.Tensor, cap: int, seed: int) -> torch.Tensor:
    """At most ``cap`` of the sorted row indices ``idx``, per class in proportion (seeded; sorted)."""
    n = idx.numel()
    if n <= cap:
        return idx
    gen = torch.Generator().manual_seed(seed)
    y_idx = y.cpu()[idx]
    keep = []
    for c in torch.unique(y_idx).tolist():
        members = idx[y_idx == c]
        m = max(1, int(round(members.numel() * cap / n)))
        keep.append(members[torch.randperm(members.numel(), generator=gen)[:m]])
    return torch.sort(torch.cat(keep)).values


def _standardised(x: torch.Tensor, idx: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor) -> torch.Tensor:
    """A float32 in-memory copy of rows ``idx`` of ``x``, standardised."""
    mean32, inv32 = mean.to(torch.float32), inv_std.to(torch.float32)
    out = torch.empty(idx.numel(), x.shape[1], dtype=torch.float32, device=x.device)
    for s, e, xc in _chunks(x, idx, _chunk_rows(x.shape[1], x.device)):
        torch.mul(xc.sub_(mean32), inv32, out=out[s:e])  # ``xc`` is a fresh gathered copy
    return out


def _weights(y: torch.Tensor, num_classes: int, sample_weight: Any, class_weight: Any) -> torch.Tensor | None:
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


def _moments(x: torch.Tensor, w: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature (weighted) mean and 1/std (float64) in one streamed pass; constant features get 1/std = 1.

    With sample weights the moments are weighted too, so a zero-weight row changes nothing at all.
    """
    n, d = x.shape
    rows = _chunk_rows(d, x.device)  # cache-sized: each chunk is read twice while it is hot
    mean = torch.zeros(d, dtype=torch.float64, device=x.device)
    m2 = torch.zeros(d, dtype=torch.float64, device=x.device)
    seen = 0.0
    for s, e, xc in _chunks(x, None, rows):  # Chan et al.'s pairwise combination of chunk moments
        if w is None:
            nc = float(e - s)
            mc = xc.mean(0)
            m2c = (xc - mc).square_().sum(0).to(torch.float64)
        else:
            wc = w[s:e].to(torch.float32)
            nc = float(wc.sum(dtype=torch.float64))
            if nc <= 0:
                continue
            mc = (wc @ xc) / nc
            m2c = (wc @ (xc - mc).square_()).to(torch.float64)
        delta = mc.to(torch.float64) - mean
        tot = seen + nc
        mean += delta * (nc / tot)
        m2 += m2c + delta.square() * (seen * nc / tot)
        seen = tot
    if not torch.isfinite(mean).all() or not torch.isfinite(m2).all():
        bad_cols = (~torch.isfinite(mean) | ~torch.isfinite(m2)).nonzero()
        raise DataError(f"fit_linear_head: features hold NaN/inf (first in column {int(bad_cols[0])}); "
                        "re-extract the features (delete the feature cache) or check the backbone's outputs")
    std = (m2 / seen).sqrt()
    scale = float(std.max()) if d else 0.0
    const = std <= max(scale * 1e-7, 1e-12)
    return mean, torch.where(const, torch.ones_like(std), 1.0 / std)


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
    ``C = 1 / (l2 * N)``), by the rule in the module docstring, and the head is refit on all samples with
    the chosen ``C``. The refit stops on the tolerances described there (``tol``: objective change per
    iteration) or after ``max_iter`` L-BFGS iterations (then ``converged`` is False and a warning says
    so). ``sample_weight`` and ``class_weight`` ("balanced" or one weight per class) weight the loss, the
    standardisation and the inner-val scores. ``x`` may be float16/bfloat16/float32, strided or
    memory-mapped. The record of the fit (chosen ``l2`` and ``C``, every grid fit, timings) is
    :meth:`HeadFit.config`.
    """
    t0 = time.perf_counter()
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
    n, d = x.shape
    if n == 0 or d == 0:
        raise DataError(f"fit_linear_head: no features to fit (shape {tuple(x.shape)})")
    if num_classes < 1:
        raise DataError(f"fit_linear_head: num_classes must be >= 1, got {num_classes}")
    y = y.to(device=x.device, dtype=torch.long)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"fit_linear_head: labels must lie in [0, {num_classes - 1}], found {lo}…{hi}")
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

    w = _weights(y, num_classes, sample_weight, class_weight)
    counts = torch.bincount(y.cpu(), minlength=num_classes)
    present = (counts > 0).nonzero().flatten()
    absent = (counts == 0).nonzero().flatten().tolist()
    if absent:
        warnings.warn(f"fit_linear_head: classes {absent[:10]}{'…' if len(absent) > 10 else ''} have no "
                      "training samples; their head rows get zero weight and a bias below every training "
                      "logit", stacklevel=2)
    k = present.numel()
    remap = torch.full((num_classes,), -1, dtype=torch.long)
    remap[present] = torch.arange(k)
    yk = remap.to(y.device)[y]

    from tqdm.auto import tqdm

    timing: dict[str, float] = {}
    mean, inv_std = _moments(x, w)
    timing["moments"] = time.perf_counter() - t0
    prob = _Problem(x, yk, w, k, label_smoothing, mean, inv_std)
    dt = torch.float64
    ws = torch.zeros(k, d, dtype=dt, device=x.device)
    b = torch.zeros(k, dtype=dt, device=x.device)
    info: dict[str, Any] = {
        "n_samples": n, "n_features": d, "num_classes": num_classes, "val_fraction": val_fraction,
        "seed": seed, "max_iter": max_iter, "tol": tol, "label_smoothing": label_smoothing,
        "class_weight": class_weight if isinstance(class_weight, str) or class_weight is None else "custom",
        "sample_weight": sample_weight is not None, "classes_without_samples": absent,
    }
    grid: list[dict] = []
    iterations, converged, val_acc, selection = 0, True, None, "given"
    use_pre = d <= _PRECOND_MAX_DIM
    info["preconditioner"] = "correlation-cholesky" if use_pre else f"none (D > {_PRECOND_MAX_DIM})"
    s_mat: torch.Tensor | _LowRank | None = None

    def sample_correlation() -> torch.Tensor | _LowRank | None:
        if not use_pre:
            return None
        gen = torch.Generator().manual_seed(seed + 104729)
        idx = torch.sort(torch.randperm(n, generator=gen)[:_PRECOND_ROWS]).values
        return _correlation(_standardised(x, idx, mean, inv_std), seed)

    if k == 1:  # one class: nothing to learn but the bias
        chosen = float(l2) if l2 is not None else 0.0
        selection = "given" if l2 is not None else "default"
        info["preconditioner"] = "none"
    else:
        chosen = float(l2) if l2 is not None else None
        tr = va = None
        if chosen is None:
            tr, va = stratified_split(y, num_classes, val_fraction, seed)
            if va.numel() == 0 or tr.numel() == 0:
                chosen, selection, tr = 1.0 / (DEFAULT_C * prob.mass), "default", None
        curv = prob.curvature
        if tr is None:
            s_mat = sample_correlation()
        else:
            selection = "grid"
            chosen, val_acc, ws, b, s_mat, curv = _grid_search(
                x, yk, w, k, label_smoothing, mean, inv_std, tr, va, prob.mass,
                c_grid=c_grid, l2_grid=l2_grid, seed=seed, max_train=grid_max_train, use_pre=use_pre, grid=grid,
                info=info, progress=progress)
        t_refit = time.perf_counter()
        bar = tqdm(total=1, desc=f"head fit: refit l2={chosen:.3g}", disable=not progress, leave=False)
        sol = _fit_one(prob, _Precond(s_mat, _gamma(chosen, curv)), chosen, ws, b, max_iter, _RTOL, tol,
                       _step0(curv))
        ws, b, iterations, converged = sol.ws, sol.b, sol.iterations, sol.converged
        if isinstance(s_mat, _LowRank):
            info["preconditioner"] = f"correlation-low-rank (rank {s_mat.lam.numel()})"
        info["refit"] = {"evaluations": sol.evaluations, "stop": sol.stop, "optimality": float(f"{sol.optimality:.3g}")}
        bar.update(1)
        bar.close()
        if not converged:
            warnings.warn(f"fit_linear_head: L-BFGS stopped at max_iter={max_iter} before reaching tol={tol} "
                          f"(l2={chosen:g}); the head is usable but may improve with a larger max_iter",
                          stacklevel=2)

    if k > 1:
        timing["refit"] = time.perf_counter() - t_refit
    final = prob.evaluate(ws, b)
    w_raw, b_raw = prob._raw(ws, b)
    shift = float(b_raw.mean())
    b_raw = b_raw - shift  # softmax is shift invariant; keep the bias centred
    weight = torch.zeros(num_classes, d, dtype=torch.float32, device=x.device)
    bias = torch.zeros(num_classes, dtype=torch.float32, device=x.device)
    present_d = present.to(x.device)
    weight[present_d] = w_raw
    bias[present_d] = b_raw
    if absent:
        bias[torch.tensor(absent, device=x.device)] = final["zmin"] - shift - 10.0
    timing = {**timing, **info.pop("timing", {})}
    timing["total"] = time.perf_counter() - t0
    info["timing"] = {key: round(v, 4) for key, v in timing.items()}
    return HeadFit(weight=weight, bias=bias, l2=float(chosen), grid=grid, iterations=iterations,
                   seconds=time.perf_counter() - t0, selection=selection, val_accuracy=val_acc,
                   train_accuracy=round(final["accuracy"], 6), train_loss=round(final["loss"], 6),
                   converged=converged, info=info, C=1.0 / (chosen * prob.mass) if chosen > 0 else None)


def _select(scores: dict[int, tuple[float, float]], n_val: float) -> int:
    """The chosen grid index: lowest inner-val loss among the values whose inner-val accuracy is within one
    binomial standard error of the best accuracy (ties: higher accuracy, then stronger regularisation)."""
    best = max(acc for acc, _ in scores.values())
    se = math.sqrt(max(best * (1.0 - best), 0.0) / max(n_val, 1.0))
    close = [i for i, (acc, _) in scores.items() if acc >= best - se - 1e-12]
    return min(close, key=lambda i: (scores[i][1], -scores[i][0], i))


def _grid_search(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, k: int, smoothing: float,
                 mean: torch.Tensor, inv_std: torch.Tensor, tr: torch.Tensor, va: torch.Tensor, mass_full: float, *,
                 c_grid: Sequence[float] | None, l2_grid: Sequence[float] | None, seed: int, max_train: int,
                 use_pre: bool, grid: list[dict], info: dict[str, Any], progress: bool
                 ) -> tuple[float, float, torch.Tensor, torch.Tensor, torch.Tensor | _LowRank | None, float]:
    """Search C on standardised in-memory copies of the inner split (subsampled when large).

    Small problems fit every grid value; large ones go coarse to fine (whole decades until neither the
    inner-val accuracy improves nor the loss at a still eligible accuracy, see :func:`_select`; then the
    half-decades around the chosen decade). Every fit
    is warm-started from the previous one, strong to weak regularisation. Appends one record per fit to
    ``grid``; returns (chosen l2 at the scale of all samples, its inner-val accuracy, the refit's warm start
    ws and b, the correlation matrix, the mean softmax curvature at the warm start).
    """
    from tqdm.auto import tqdm

    t_setup = time.perf_counter()
    d = x.shape[1]
    cap_rows = max(1000, _GRID_BYTES // (4 * d))  # both copies together
    cap_tr = min(max_train, max(1, int(cap_rows * 2 / 3)))
    cap_va = min(GRID_MAX_VAL, max(1, cap_rows - min(cap_tr, tr.numel())))
    tr_s = _stratified_subsample(tr, y, cap_tr, seed + 1)
    va_s = _stratified_subsample(va, y, cap_va, seed + 2)
    z_tr = _standardised(x, tr_s, mean, inv_std)
    z_va = _standardised(x, va_s, mean, inv_std)
    s_mat = _correlation(z_tr, seed) if use_pre else None
    t_setup = time.perf_counter() - t_setup
    tr_d, va_d = tr_s.to(y.device), va_s.to(y.device)
    p_tr = _Problem(z_tr, y[tr_d], None if w is None else w[tr_d], k, smoothing)
    p_va = _Problem(z_va, y[va_d], None if w is None else w[va_d], k, smoothing)
    n_val = float(va_s.numel()) if w is None else p_va.mass ** 2 / max(float(w[va_d].double().square().sum()), 1e-300)
    if c_grid is not None:
        cs = sorted({float(c) for c in c_grid})
    elif l2_grid is not None:
        cs = sorted({1.0 / (float(v) * mass_full) if v > 0 else math.inf for v in l2_grid})
    else:
        cs = list(DEFAULT_C_GRID)
    full = tr_s.numel() * d <= _FULL_GRID_WORK or len(cs) <= 3
    info["inner_split"] = {"train": int(tr.numel()), "val": int(va.numel()), "grid_train": int(tr_s.numel()),
                           "grid_val": int(va_s.numel())}
    info["grid_search"] = "full" if full else "coarse-to-fine"
    info["selection_rule"] = "lowest inner-val loss among C values within one standard error of the best " \
                             "inner-val accuracy"
    sols: dict[int, tuple[torch.Tensor, torch.Tensor, float, float, float]] = {}  # ws, b, acc, loss, curvature

    def fit_c(c: float, stage: str, ws0: torch.Tensor, b0: torch.Tensor, curv: float) -> tuple:
        t1 = time.perf_counter()
        lam = 0.0 if math.isinf(c) else 1.0 / (c * p_tr.mass)
        gamma = _gamma(lam, curv)
        sol = _fit_one(p_tr, _Precond(s_mat, gamma), lam, ws0, b0, _GRID_MAX_ITER, _GRID_RTOL, _GRID_FTOL,
                       _step0(curv))
        m = p_va.evaluate(sol.ws, sol.b)
        curv_end = p_tr.evaluate(sol.ws, sol.b, curvature=True)["curvature"]
        grid.append({"C": c, "l2": 0.0 if math.isinf(c) else 1.0 / (c * mass_full), "stage": stage,
                     "val_accuracy": round(m["accuracy"], 6), "val_loss": round(m["loss"], 6),
                     "iterations": sol.iterations, "evaluations": sol.evaluations, "converged": sol.converged,
                     "stop": sol.stop, "seconds": round(time.perf_counter() - t1, 4)})
        return sol.ws, sol.b, m["accuracy"], m["loss"], curv_end

    def scores() -> dict[int, tuple[float, float]]:
        return {i: (v[2], v[3]) for i, v in sols.items()}

    def start(c: float, ws0: torch.Tensor, b0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Warm start for C = ``c``: (ws0, b0), or the solutions done so far inter-/extrapolated linearly in
        log C (a continuation predictor), whichever has the lower objective at ``c``."""
        done = sorted((math.log(cs[j]), j) for j in sols if math.isfinite(cs[j]))
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
        ws_p = sols[j0][0] + t * (sols[j1][0] - sols[j0][0])
        b_p = sols[j0][1] + t * (sols[j1][1] - sols[j0][1])
        lam = 1.0 / (c * p_tr.mass)

        def objective(ws_: torch.Tensor, b_: torch.Tensor) -> float:  # a loss-only pass: no gradient needed
            return p_tr.evaluate(ws_, b_)["loss"] + 0.5 * lam * float(ws_.square().sum())

        return (ws_p, b_p) if objective(ws_p, b_p) < objective(ws0, b0) else (ws0, b0)

    t_grid = time.perf_counter()
    if full:
        path = list(range(len(cs)))
    else:
        path = list(range(0, len(cs), 2)) + ([len(cs) - 1] if (len(cs) - 1) % 2 else [])
    bar = tqdm(total=len(path) + (0 if full else 2), desc="head fit: C grid", disable=not progress, leave=False)
    ws = torch.zeros(k, d, dtype=torch.float64, device=x.device)
    b = torch.zeros(k, dtype=torch.float64, device=x.device)
    curv, prev_curv = p_tr.curvature, None
    best_acc, best_loss, stale = -math.inf, math.inf, 0
    for i in path:
        sols[i] = fit_c(cs[i], "path" if full else "coarse", *start(cs[i], ws, b), curv)
        bar.update(1)
        ws, b, acc, loss, c_i = sols[i]
        # the next (weaker) value's solution is more confident: extrapolate the curvature geometrically
        curv = c_i if prev_curv is None else c_i * min(1.0, c_i / max(prev_curv, 1e-300))
        prev_curv = c_i
        # going on pays while the accuracy improves, or the loss does at an accuracy that can still be chosen
        se = math.sqrt(max(best_acc * (1.0 - best_acc), 0.0) / max(n_val, 1.0)) if best_acc > -math.inf else 0.0
        improved = acc > best_acc or (loss < best_loss and acc >= best_acc - se)
        best_acc, best_loss = max(best_acc, acc), min(best_loss, loss)
        stale = 0 if improved else stale + 1
        if not full and stale >= _PATIENCE:
            break
    pick = _select(scores(), n_val)
    if not full:
        centre = pick
        for i in (centre - 1, centre + 1):
            if 0 <= i < len(cs) and i not in sols:
                sols[i] = fit_c(cs[i], "fine", *start(cs[i], sols[centre][0], sols[centre][1]), sols[centre][4])
                bar.update(1)
        pick = _select(scores(), n_val)
    c_best = cs[pick]
    chosen = 0.0 if math.isinf(c_best) else 1.0 / (c_best * mass_full)
    ws, b, _, _, curv = sols[pick]
    if chosen > 0:
        # warm start of the refit: the subsample's solution with the refit's l2 (the same objective up to
        # sampling), not the one with the same C: its weights are much closer to the refit's optimum
        c_eq = c_best * mass_full / p_tr.mass
        near = min(sols, key=lambda j: abs(math.log(cs[j] / c_eq)))
        ws, b, _, _, curv = sols[near]
        if abs(math.log10(cs[near] / c_eq)) > 0.25:
            ws, b, _, _, curv = fit_c(c_eq, "refit warm start", *start(c_eq, ws, b), curv)
        else:
            ws, b = start(c_eq, ws, b)
    bar.close()
    info["timing"] = {"grid_setup": t_setup, "grid": time.perf_counter() - t_grid}
    return chosen, sols[pick][2], ws, b, s_mat, curv
