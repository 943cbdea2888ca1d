"""Converged linear-head fit on cached features: multinomial logistic regression by full-batch L-BFGS.

The default head fit of a feature-extraction run (no epoch count given). It follows the standard
linear-probe protocol (Kornblith et al. 2019): an L2-regularised multinomial logistic regression trained
to convergence, its L2 strength picked on a stratified, seeded split of the training set, then refit on
all of it. The objective, on standardised features ``z = (x - mean) / std``, is

    sum_i w_i * CE(W z_i + b, y_i) / sum_i w_i  +  (l2 / 2) * ||W||_F^2        (bias unpenalised)

so ``l2`` is the usual weight-decay coefficient and scikit-learn's ``LogisticRegression(C=...)`` on
standardised features solves the same problem for ``C = 1 / (l2 * n)``. The returned weight and bias act
on the *raw* features: the standardisation is folded in.

Speed. Each loss/gradient evaluation is one streamed pass over the features in row chunks (the forward
and backward matmuls of a chunk run while it is in cache; float16/bfloat16 or memory-mapped features are
converted a chunk at a time, never copied whole). L-BFGS runs in a preconditioned parameterisation
``W = U L^{-T}`` where ``L L^T = S + gamma I`` and ``S`` is the features' correlation matrix estimated on a
row subsample: it whitens the strongly correlated directions of deep features, so L-BFGS needs tens of
iterations instead of hundreds. Successive grid values warm-start from the previous solution (largest
``l2`` first) and the search stops once two smaller values in a row fail to improve the inner-val score.
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

# Default grid in scikit-learn's C (= 1 / (l2 * n_fit)): half-decades from strong to weak regularisation.
DEFAULT_C_GRID: tuple[float, ...] = tuple(10.0 ** (k / 2) for k in range(-8, 3))  # 1e-4 … 10
DEFAULT_C = 0.1  # used when the training set is too small to hold out an inner validation split
_PATIENCE = 2  # grid values in a row without improvement before the search stops
_INNER_TOL = 1e-5  # looser loss-change tolerance for the grid fits (only their ranking matters)
_CHUNK_BYTES = 8 << 20  # row chunk of the streamed passes (~L2/L3 sized on CPU)
_PRECOND_MAX_DIM = 4096  # above this the D x D preconditioner costs more than it saves
_PRECOND_ROWS = 4096  # rows used to estimate the correlation matrix (at least 2 * D)
_HISTORY = 20  # L-BFGS history size


@dataclass
class HeadFit:
    """Result of :func:`fit_linear_head`: a linear head acting on raw features, and how it was chosen."""

    weight: torch.Tensor  # [C, D] float32, acts on raw features (standardisation folded in)
    bias: torch.Tensor  # [C] float32
    l2: float  # L2 strength of the final refit (the chosen grid value, or the one given)
    grid: list[dict]  # per candidate: l2, C, val_accuracy, val_loss, iterations, evaluations, seconds
    iterations: int  # L-BFGS iterations of the final refit
    seconds: float  # wall time of the whole fit, grid search included
    method: str = "lbfgs"
    selection: str = "grid"  # "grid", "given" (l2 passed in) or "default" (too few samples to split)
    val_accuracy: float | None = None  # inner-val accuracy of the chosen l2
    train_accuracy: float | None = None  # accuracy of the final head on all training features
    train_loss: float | None = None  # its (weighted, smoothed) cross entropy
    converged: bool = True  # the final refit stopped on tolerance, not on max_iter
    info: dict[str, Any] = field(default_factory=dict)  # sizes and settings, copied into config()

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear(D, C)`` holding the fitted weight and bias (float32, on the weight's device)."""
        c, d = self.weight.shape
        layer = nn.Linear(d, c, device=self.weight.device)
        with torch.no_grad():
            layer.weight.copy_(self.weight)
            layer.bias.copy_(self.bias)
        return layer

    def config(self) -> dict:
        """JSON-ready record of the fit: method, chosen l2 (and its C), grid results, iterations, timing."""
        n = self.info.get("n_samples")
        return {
            "method": f"{self.method} (multinomial logistic regression, full batch, standardised features)",
            "selection": self.selection,
            "l2": self.l2,
            "C": (1.0 / (self.l2 * n)) if n and self.l2 > 0 else None,
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
# streamed passes over the features


def _chunk_rows(d: int, device: torch.device) -> int:
    if device.type != "cpu":
        return 1 << 16
    return max(256, _CHUNK_BYTES // (4 * max(d, 1)))


def _chunks(x: torch.Tensor, idx: torch.Tensor | None, rows: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (start, stop, float32 chunk) over all rows, or over the sorted row indices ``idx``."""
    n = x.shape[0] if idx is None else idx.numel()
    for s in range(0, n, rows):
        e = min(s + rows, n)
        xc = x[s:e] if idx is None else x.index_select(0, idx[s:e])
        yield s, e, xc.to(torch.float32)


class _Problem:
    """The data side of the objective: features (never copied whole), labels, weights, standardisation."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, num_classes: int,
                 smoothing: float, mean: torch.Tensor, inv_std: torch.Tensor):
        self.x, self.y, self.w = x, y, w
        self.k = num_classes
        self.smoothing = smoothing
        self.mean64, self.inv_std64 = mean, inv_std  # float64 [D]
        self.rows = _chunk_rows(x.shape[1], x.device)

    def _raw(self, ws: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw-feature weight/bias (float32) equivalent to standardised-space ``ws``/``b`` (float64)."""
        w_raw = ws * self.inv_std64
        b_raw = b - w_raw @ self.mean64
        return w_raw.to(torch.float32), b_raw.to(torch.float32)

    def loss_grad(self, ws: torch.Tensor, b: torch.Tensor, idx: torch.Tensor | None,
                  norm: float) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Mean weighted CE over rows ``idx`` and its gradients w.r.t. standardised-space ``ws`` and ``b``."""
        w_raw, b_raw = self._raw(ws, b)
        g_w = torch.zeros_like(w_raw)
        g_b = torch.zeros_like(b_raw)
        total = 0.0
        eps = self.smoothing
        for s, e, xc in _chunks(self.x, idx, self.rows):
            yc = self.y[s:e] if idx is None else self.y[idx[s:e]]
            z = torch.addmm(b_raw, xc, w_raw.T)
            logp = torch.log_softmax(z, dim=1)
            nll = -logp.gather(1, yc[:, None]).squeeze(1)
            if eps:
                nll = (1 - eps) * nll - eps * logp.mean(dim=1)
            g = logp.exp_()
            g.scatter_add_(1, yc[:, None], torch.full((e - s, 1), -(1 - eps), device=g.device))
            if eps:
                g.sub_(eps / self.k)
            if self.w is not None:
                wc = self.w[s:e] if idx is None else self.w[idx[s:e]]
                nll = nll * wc
                g.mul_(wc[:, None])
            total += float(nll.sum(dtype=torch.float64))
            g_w.addmm_(g.T, xc)
            g_b.add_(g.sum(0))
        g_w64 = g_w.to(torch.float64) / norm
        g_b64 = g_b.to(torch.float64) / norm
        # chain rule through the folding: w_raw = ws * inv_std, b_raw = b - w_raw @ mean
        g_ws = (g_w64 - g_b64[:, None] * self.mean64) * self.inv_std64
        return total / norm, g_ws, g_b64

    @torch.no_grad()
    def evaluate(self, ws: torch.Tensor, b: torch.Tensor, idx: torch.Tensor | None) -> dict[str, float]:
        """Weighted accuracy, weighted (smoothed) CE and the smallest logit over rows ``idx``."""
        w_raw, b_raw = self._raw(ws, b)
        correct = loss = mass = 0.0
        zmin = math.inf
        eps = self.smoothing
        for s, e, xc in _chunks(self.x, idx, self.rows):
            yc = self.y[s:e] if idx is None else self.y[idx[s:e]]
            z = torch.addmm(b_raw, xc, w_raw.T)
            logp = torch.log_softmax(z, dim=1)
            nll = -logp.gather(1, yc[:, None]).squeeze(1)
            if eps:
                nll = (1 - eps) * nll - eps * logp.mean(dim=1)
            hit = (z.argmax(1) == yc).to(torch.float32)
            if self.w is not None:
                wc = self.w[s:e] if idx is None else self.w[idx[s:e]]
                nll, hit = nll * wc, hit * wc
                mass += float(wc.sum(dtype=torch.float64))
            else:
                mass += e - s
            loss += float(nll.sum(dtype=torch.float64))
            correct += float(hit.sum(dtype=torch.float64))
            zmin = min(zmin, float(z.min()))
        mass = max(mass, 1e-300)
        return {"accuracy": correct / mass, "loss": loss / mass, "zmin": zmin}

    def mass(self, idx: torch.Tensor | None) -> float:
        if self.w is None:
            return float(self.x.shape[0] if idx is None else idx.numel())
        return float((self.w if idx is None else self.w[idx]).sum(dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------
# preconditioner


class _Precond:
    """``W = U R`` with ``R = L^{-T}``, ``L L^T = S + gamma I``; identity when ``S`` is None."""

    def __init__(self, s: torch.Tensor | None, l2: float):
        self.lower = None
        if s is None:
            return
        gamma = max(l2, 1e-6)
        eye = torch.eye(s.shape[0], dtype=s.dtype, device=s.device)
        for _ in range(8):
            lower, info = torch.linalg.cholesky_ex(s + gamma * eye)
            if int(info) == 0:
                self.lower = lower
                return
            gamma *= 10
        # never reached for a PSD S; fall back to plain standardised coordinates

    def to_w(self, u: torch.Tensor) -> torch.Tensor:
        if self.lower is None:
            return u
        return torch.linalg.solve_triangular(self.lower, u.T, upper=False).T

    def to_u(self, w: torch.Tensor) -> torch.Tensor:
        return w if self.lower is None else w @ self.lower

    def grad_u(self, g_w: torch.Tensor) -> torch.Tensor:
        if self.lower is None:
            return g_w
        return torch.linalg.solve_triangular(self.lower.T, g_w.T, upper=True).T


def _correlation(x: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor, seed: int) -> torch.Tensor:
    """Correlation matrix of the standardised features on a seeded row subsample (float64 [D, D])."""
    n, d = x.shape
    m = min(n, max(_PRECOND_ROWS, 2 * d))
    gen = torch.Generator().manual_seed(seed)
    idx = torch.sort(torch.randperm(n, generator=gen)[:m]).values.to(x.device)
    mean32, inv32 = mean.to(torch.float32), inv_std.to(torch.float32)
    acc = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    for _, _, xc in _chunks(x, idx, max(1024, _chunk_rows(d, x.device))):
        zc = (xc - mean32) * inv32
        acc += (zc.T @ zc).to(torch.float64)
    acc /= m
    return (acc + acc.T) / 2


# ----------------------------------------------------------------------------------------------------
# one L-BFGS fit


def _fit_one(prob: _Problem, s_mat: torch.Tensor | None, l2: float, idx: torch.Tensor | None,
             ws0: torch.Tensor, b0: torch.Tensor, max_iter: int, tol: float
             ) -> tuple[torch.Tensor, torch.Tensor, int, int, bool]:
    """Minimise the objective on rows ``idx`` from (ws0, b0); returns (ws, b, iterations, evals, converged)."""
    pre = _Precond(s_mat, l2)
    norm = prob.mass(idx)
    u = pre.to_u(ws0).clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([u, b], lr=1, max_iter=max_iter, max_eval=max_iter * 2, history_size=_HISTORY,
                            tolerance_grad=tol * 1e-2, tolerance_change=tol, line_search_fn="strong_wolfe")
    bad: list[str] = []

    def closure() -> torch.Tensor:
        with torch.no_grad():
            ws = pre.to_w(u)
            loss, g_ws, g_b = prob.loss_grad(ws, b, idx, norm)
            if not math.isfinite(loss):
                bad.append(f"loss {loss}")
                # a huge finite loss makes the line search back off instead of crashing
                u.grad, b.grad = torch.zeros_like(u), torch.zeros_like(b)
                return torch.tensor(1e30, dtype=torch.float64)
            loss += 0.5 * l2 * float((ws * ws).sum())
            u.grad = pre.grad_u(g_ws + l2 * ws)
            b.grad = g_b
        return torch.tensor(loss, dtype=torch.float64)

    opt.step(closure)
    state = opt.state[u]
    iters, evals = int(state.get("n_iter", 0)), int(state.get("func_evals", 0))
    with torch.no_grad():
        ws = pre.to_w(u.detach())
    if bad and not torch.isfinite(ws).all():
        raise TrainingError(f"head fit diverged (non-finite {bad[0]}) at l2={l2:g}; check the features for "
                            "extreme values or pass a larger l2 to fit_linear_head")
    return ws, b.detach(), iters, evals, iters < max_iter


# ----------------------------------------------------------------------------------------------------
# inputs


def _stratified_split(y: torch.Tensor, num_classes: int, val_fraction: float,
                      seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded per-class split; every class keeps at least one training sample (sorted index tensors)."""
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


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and 1/std (float64), streamed; constant features get 1/std = 1."""
    n, d = x.shape
    rows = _chunk_rows(d, x.device)
    total = torch.zeros(d, dtype=torch.float64, device=x.device)
    for _, _, xc in _chunks(x, None, rows):
        total += xc.sum(0, dtype=torch.float64)
    mean = total / n
    if not torch.isfinite(mean).all():
        bad = int((~torch.isfinite(mean)).nonzero()[0])
        raise DataError(f"fit_linear_head: features hold NaN/inf (first in column {bad}); re-extract the "
                        "features (delete the feature cache) or check the backbone's outputs")
    sq = torch.zeros(d, dtype=torch.float64, device=x.device)
    mean32 = mean.to(torch.float32)
    for _, _, xc in _chunks(x, None, rows):
        sq += ((xc - mean32) ** 2).sum(0, dtype=torch.float64)
    std = (sq / n).sqrt()
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
                    progress: bool = False) -> HeadFit:
    """Fit a converged L2-regularised softmax head on features ``x`` [N, D] with labels ``y`` [N].

    ``l2`` fixes the L2 strength (no search). Otherwise each value of ``l2_grid`` (default: scikit-learn
    ``C`` in 1e-4…10 by half-decades, i.e. ``l2 = 1 / (C * n_inner)``) is fitted on a stratified split
    (``val_fraction`` held out, seeded by ``seed``), the best inner-val accuracy wins (ties: lower loss),
    and the head is refit on all samples with it. ``sample_weight`` and ``class_weight`` ("balanced" or one
    weight per class) weight the loss and the inner-val scores. ``x`` may be float16/bfloat16/float32 and
    memory-mapped: it is read in row chunks, never copied whole.
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
    if l2_grid is not None:
        l2_grid = [float(v) for v in l2_grid]
        if not l2_grid or any(not (v >= 0 and math.isfinite(v)) for v in l2_grid):
            raise DataError(f"fit_linear_head: l2_grid must be a non-empty list of finite values >= 0, "
                            f"got {l2_grid}")
    if max_iter < 1 or not tol > 0:
        raise DataError(f"fit_linear_head: need max_iter >= 1 and tol > 0, got {max_iter}, {tol}")

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

    mean, inv_std = _moments(x)
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
    if k == 1:  # one class: nothing to learn but the bias
        chosen = float(l2) if l2 is not None else 0.0
        selection = "given" if l2 is not None else "default"
        info["preconditioner"] = "none"
    else:
        s_mat = _correlation(x, mean, inv_std, seed) if d <= _PRECOND_MAX_DIM else None
        info["preconditioner"] = "correlation-cholesky" if s_mat is not None else "none (D > "\
            f"{_PRECOND_MAX_DIM})"
        chosen = float(l2) if l2 is not None else None
        if chosen is None:
            tr, va = _stratified_split(y, num_classes, val_fraction, seed)
            tr, va = tr.to(x.device), va.to(x.device)
            if va.numel() == 0 or tr.numel() == 0:
                chosen, selection = 1.0 / (DEFAULT_C * n), "default"  # l2 = 1 / (C n)
            else:
                selection = "grid"
                n_in = tr.numel()
                cand = sorted(l2_grid if l2_grid is not None else [1.0 / (c * n_in) for c in DEFAULT_C_GRID],
                              reverse=True)
                info["inner_split"] = {"train": n_in, "val": int(va.numel())}
                bar = tqdm(cand, desc="head fit: l2 grid", disable=not progress, leave=False)
                best, best_key, stale, sols = None, None, 0, {}
                for lam in bar:
                    t1 = time.perf_counter()
                    ws, b, it, ev, conv = _fit_one(prob, s_mat, lam, tr, ws, b, max_iter, max(tol, _INNER_TOL))
                    m = prob.evaluate(ws, b, va)
                    grid.append({"l2": lam, "C": 1.0 / (lam * n_in) if lam > 0 else None,
                                 "val_accuracy": round(m["accuracy"], 6), "val_loss": round(m["loss"], 6),
                                 "iterations": it, "evaluations": ev, "converged": conv,
                                 "seconds": round(time.perf_counter() - t1, 4)})
                    sols[lam] = (ws, b)
                    bar.set_postfix(l2=f"{lam:.2g}", acc=f"{m['accuracy']:.4f}", it=it)
                    key = (m["accuracy"], -m["loss"])
                    if best_key is None or key > best_key:
                        best, best_key, stale = lam, key, 0
                    else:
                        stale += 1
                        if stale >= _PATIENCE:
                            break
                bar.close()
                chosen, val_acc = best, best_key[0]
                ws, b = sols[chosen]  # warm start of the refit
        it_bar = tqdm(total=1, desc=f"head fit: refit l2={chosen:.3g}", disable=not progress, leave=False)
        ws, b, iterations, _, converged = _fit_one(prob, s_mat, chosen, None, ws, b, max_iter, tol)
        it_bar.update(1)
        it_bar.close()
        if not converged:
            warnings.warn(f"fit_linear_head: L-BFGS stopped at max_iter={max_iter} before reaching tol={tol} "
                          f"(l2={chosen:g}); the head is usable but may improve with a larger max_iter",
                          stacklevel=2)

    final = prob.evaluate(ws, b, None)
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
    return HeadFit(weight=weight, bias=bias, l2=float(chosen), grid=grid, iterations=iterations,
                   seconds=time.perf_counter() - t0, selection=selection, val_accuracy=val_acc,
                   train_accuracy=round(final["accuracy"], 6), train_loss=round(final["loss"], 6),
                   converged=converged, info=info)
