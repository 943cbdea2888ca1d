"""The scores of one backbone's frozen features, without fine-tuning: LogME and the k-fold linear probe.

* **LogME** (You et al., ICML 2021; :func:`zoo_core.ranking.logme.logme`): the maximised evidence of Bayesian linear
  regression from the features to each one-vs-rest target, per sample, averaged over classes. One
  eigendecomposition, no training; higher is better; comparable between backbones on one dataset only.
* **probe**: the accuracy of the converged linear probe (:func:`zoo_core.headfit.fit_linear_head`, the head a
  feature-extraction run trains) on the held-out folds of a stratified, seeded k-fold split
  (:func:`zoo_core.headfit.stratified_folds`). Its spread is the standard deviation over the folds. The regularisation ``C``
  is searched once, by the head fit's own search on the first fold's training part, and reused for the
  other folds: the search is ~20 times the cost of one converged fit, and ``C`` (not the L2 strength)
  carries over between training sets of different size.

The spread of LogME is its standard deviation over the k training parts of the same folds (each leaving one
fold out), so both scores carry a spread measured on the same subsets.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .. import headfit
from ..errors import DataError
from .logme import logme

SCORES = ("logme", "probe")
"""The scores a ranking can be ordered by (``score=``, ``--score``)."""
DEFAULT_SCORE = "probe"
"""The score that orders a ranking unless told otherwise (see README, "Rank backbones", for the measurement)."""


@dataclass(frozen=True)
class Scores:
    """Both scores of one feature matrix, their spreads over the folds, and how long they took."""

    logme: float
    logme_std: float
    probe_acc: float
    probe_std: float
    probe_folds: tuple[float, ...]  # held-out accuracy of each fold
    seconds: float

    def primary(self, score: str) -> tuple[float, float]:
        """``(value, spread)`` of the score named ``score`` (one of :data:`SCORES`)."""
        return (self.logme, self.logme_std) if score == "logme" else (self.probe_acc, self.probe_std)


def _probe_fold(x: torch.Tensor, y: torch.Tensor, train: np.ndarray, held: np.ndarray, num_classes: int,
                seed: int, c: float | None) -> tuple[float, float | None]:
    """(held-out accuracy, ``C``) of the converged linear probe fitted on rows ``train``: with ``C`` picked by
    the head fit's own search when ``c`` is None, else with that ``C`` (scikit-learn's, so it carries over to
    another number of rows)."""
    tr, va = torch.from_numpy(train), torch.from_numpy(held)
    l2 = None if c is None else 1.0 / (c * len(train))
    with warnings.catch_warnings():  # a class whose few images all fell into the held-out fold
        warnings.filterwarnings("ignore", message="fit_linear_head: classes .* have no training samples")
        fit = headfit.fit_linear_head(x[tr], y[tr], num_classes, seed=seed, l2=l2)
    logits = x[va].float() @ fit.weight.T + fit.bias
    return float((logits.argmax(1) == y[va]).float().mean()), fit.C if c is None else c


def score_features(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, folds: int = 5,
                   seed: int = 0) -> Scores:
    """LogME and the k-fold probe accuracy of ``features`` [N, D] for ``labels`` [N] (see the module docstring)."""
    t0 = time.perf_counter()
    n = int(features.shape[0])
    if folds < 2:
        raise DataError(f"the k-fold probe needs at least 2 folds, got {folds} (--folds)")
    if n < 2 * folds:
        raise DataError(f"{n} images are too few for a {folds}-fold probe: need at least {2 * folds} "
                        "(use more images, a larger --budget or fewer --folds)")
    x = features if features.dtype == torch.float32 else features.float()
    y = torch.as_tensor(labels, dtype=torch.long)
    if not bool(torch.isfinite(x).all()):
        raise DataError("the features contain NaN or inf (try --precision fp32)")
    y_np = y.numpy()
    parts = [p.numpy() for p in headfit.stratified_folds(y, folds, seed)]
    everything = np.arange(n)
    probe, evidence, c = [], [], None
    for held in parts:
        train = np.setdiff1d(everything, held, assume_unique=True)
        acc, c = _probe_fold(x, y, train, held, num_classes, seed, c)
        probe.append(acc)
        evidence.append(logme(x[torch.from_numpy(train)].numpy(), y_np[train], num_classes))
    return Scores(logme=logme(x.numpy(), y_np, num_classes), logme_std=float(np.std(evidence)),
                  probe_acc=float(np.mean(probe)), probe_std=float(np.std(probe)), probe_folds=tuple(probe),
                  seconds=time.perf_counter() - t0)
