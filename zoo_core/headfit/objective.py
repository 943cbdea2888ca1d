"""The softmax cross-entropy problem of the head fit: data, standardisation, and passes over the features.

On standardised features ``z = (x - mean) / std`` the head fit minimises

    sum_i w_i * CE(W z_i + b, y_i) / sum_i w_i  +  (l2 / 2) * ||W||_F^2        (bias unpenalised)

:class:`Problem` is the data side of it: the weighted, optionally label-smoothed cross entropy ``CE``, its
gradient and evaluation scores (the ``l2`` term is the solver's, :mod:`.solver`). Weights live in
standardised space (float64); the standardisation is folded into them for every pass (``W z + b = W' x + b'``
with ``W' = W / std``, ``b' = b - W' mean``), so the features are read in place, a cache-sized row chunk at a
time: the forward and backward matmuls of a chunk run while it is in cache, and float16/bfloat16,
memory-mapped or strided features are converted a chunk at a time, never copied whole.
:func:`moments` gives the (weighted) mean and 1/std in one streamed pass (std floored at
:data:`STD_FLOOR` x the median feature std, so near-dead features are not blown up).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from ..errors import DataError

STD_FLOOR = 0.1  # no feature is scaled by more than 1 / (this x the median feature std): see moments()
CHUNK_BYTES = 4 << 20  # row chunk of the passes: fwd and bwd matmuls of a chunk run while it is in cache


def chunk_rows(d: int, device: torch.device) -> int:
    """Rows per chunk: ~CHUNK_BYTES of float32 on CPU (cache-sized), large blocks on accelerators."""
    if device.type != "cpu":
        return 1 << 16
    return max(64, CHUNK_BYTES // (4 * max(d, 1)))


def chunks(x: torch.Tensor, idx: torch.Tensor | None, rows: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (start, stop, float32 chunk) over all rows, or over the sorted row indices ``idx``."""
    n = x.shape[0] if idx is None else idx.numel()
    for s in range(0, n, rows):
        e = min(s + rows, n)
        xc = x[s:e] if idx is None else x.index_select(0, idx[s:e].to(x.device))
        yield s, e, xc.to(torch.float32)


def standardised(x: torch.Tensor, idx: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor) -> torch.Tensor:
    """A float32 in-memory copy of rows ``idx`` of ``x``, standardised."""
    mean32, inv32 = mean.to(torch.float32), inv_std.to(torch.float32)
    out = torch.empty(idx.numel(), x.shape[1], dtype=torch.float32, device=x.device)
    for s, e, xc in chunks(x, idx, chunk_rows(x.shape[1], x.device)):
        torch.mul(xc.sub_(mean32), inv32, out=out[s:e])  # ``xc`` is a fresh gathered copy
    return out


class Problem:
    """The data side of the objective: features (never copied whole), labels, weights, standardisation.

    ``mean64``/``inv_std64`` (float64 [D]) map raw features to standardised ones; ``None`` when ``x`` is
    already standardised (the in-memory copies of the grid search, :meth:`subset`).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, num_classes: int,
                 smoothing: float, mean: torch.Tensor | None = None, inv_std: torch.Tensor | None = None):
        self.x, self.y, self.w = x, y, w
        self.k = num_classes
        self.smoothing = smoothing
        self.mean64, self.inv_std64 = mean, inv_std
        self.rows = chunk_rows(x.shape[1], x.device)
        self.mass = float(x.shape[0]) if w is None else float(w.sum(dtype=torch.float64))
        self.curvature = (1 - 1 / num_classes) / num_classes  # E[sum_k p_k (1 - p_k)] / K at uniform p
        self._neg: torch.Tensor | None = None

    def standardised_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """A float32 standardised in-memory copy of rows ``idx`` (sorted, CPU) of a raw-feature problem."""
        return standardised(self.x, idx, self.mean64, self.inv_std64)

    def subset(self, idx: torch.Tensor) -> Problem:
        """The problem on rows ``idx`` (sorted, CPU) of a raw-feature problem, as a standardised in-memory copy."""
        idx_d = idx.to(self.y.device)
        return Problem(self.standardised_rows(idx), self.y[idx_d], None if self.w is None else self.w[idx_d],
                       self.k, self.smoothing)

    def effective_size(self) -> float:
        """Number of rows, or with weights Kish's effective sample size ``(sum w)^2 / sum w^2``."""
        if self.w is None:
            return float(self.x.shape[0])
        return self.mass ** 2 / max(float(self.w.double().square().sum()), 1e-300)

    def to_raw(self, ws: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
        w_raw, b_raw = self.to_raw(ws, b)
        w_t = w_raw.T
        g_w = torch.zeros_like(w_raw)
        g_b = torch.zeros_like(b_raw)
        total = torch.zeros((), dtype=torch.float64, device=self.x.device)
        for s, e, xc in chunks(self.x, None, self.rows):
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

        The curvature is ``E[sum_k p_k (1 - p_k)] / K``: the scale of the loss's Hessian (see
        :func:`.precond.gamma`); asking for it also stores it as :attr:`curvature`.
        """
        w_raw, b_raw = self.to_raw(ws, b)
        correct, loss, curv = (torch.zeros((), dtype=torch.float64, device=self.x.device) for _ in range(3))
        zmin = torch.tensor(math.inf, device=self.x.device)
        for s, e, xc in chunks(self.x, None, self.rows):
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


def moments(x: torch.Tensor, w: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature (weighted) mean and 1/std (float64) in one streamed pass, std floored at
    :data:`STD_FLOOR` times the median std of the non-constant features.

    The floor matters for pooled CNN features of a far domain: a channel almost dead on the training images
    (std 1e-5 where the median is 0.1) would otherwise be scaled up 10,000-fold, its weight would cost
    next to nothing under the L2 penalty, and one validation image that wakes the channel up gets logits
    in the thousands (EfficientNet-Lite0 on 64 px digits: val loss 21.4 at 94.0 % without the floor,
    0.16 at 95.3 % with it). With sample weights the moments are weighted too, so a zero-weight row
    changes nothing at all.
    """
    n, d = x.shape
    rows = chunk_rows(d, x.device)  # cache-sized: each chunk is read twice while it is hot
    mean = torch.zeros(d, dtype=torch.float64, device=x.device)
    m2 = torch.zeros(d, dtype=torch.float64, device=x.device)
    seen = 0.0
    for s, e, xc in chunks(x, None, rows):  # Chan et al.'s pairwise combination of chunk moments
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
    varying = std[std > max(scale * 1e-7, 1e-12)]
    if varying.numel() == 0:  # every feature constant: nothing to scale
        return mean, torch.ones_like(std)
    return mean, 1.0 / std.clamp_min(STD_FLOOR * float(varying.median()))
