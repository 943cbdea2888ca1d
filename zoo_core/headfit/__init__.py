"""Converged linear-head fit on cached features: multinomial logistic regression by full-batch L-BFGS.

The default head fit of a feature-extraction run (no epoch count given). It follows the standard
linear-probe protocol (Kornblith et al. 2019): an L2-regularised multinomial logistic regression trained
to convergence, its regularisation strength picked on a stratified, seeded split of the training set, then
refit on all of it. The objective, on standardised features ``z = (x - mean) / std`` (each ``std`` at least
a tenth of the median feature std: :data:`.objective.STD_FLOOR`), is

    sum_i w_i * CE(W z_i + b, y_i) / sum_i w_i  +  (l2 / 2) * ||W||_F^2        (bias unpenalised)

so ``l2`` is the usual weight-decay coefficient, and scikit-learn's ``LogisticRegression(C=...)`` on
standardised features solves the same problem for ``C = 1 / (l2 * sum_i w_i)`` (``1 / (l2 * n)``
unweighted). The grid is expressed in ``C``: the same ``C`` means the same prior whatever the number of
samples, so a value chosen on the inner split carries over to the refit on all samples (as in
scikit-learn's refit). The returned weight and bias act on the *raw* features: the standardisation is
folded in.

Modules (each docstring explains its part of the method):

* :mod:`.api`: :func:`fit_linear_head` (input checks, weights, refit) and its result :class:`HeadFit`;
* :mod:`.objective`: the weighted, label-smoothed softmax cross entropy, passes over the features a row
  chunk at a time, standardisation;
* :mod:`.precond`: the correlation preconditioner (dense Cholesky or low rank) that whitens the features;
* :mod:`.solver`: one preconditioned L-BFGS fit for a fixed ``l2`` and its stopping rules;
* :mod:`.grid`: the warm-started, coarse-to-fine search for ``C`` and the selection rule;
* :mod:`.split`: the seeded stratified inner split and subsamples (and the folds of ``compare --folds``).
"""

from .api import DEFAULT_C, HeadFit, fit_linear_head
from .grid import DEFAULT_C_GRID, GRID_MAX_TRAIN, GRID_MAX_VAL
from .split import stratified_folds, stratified_split

__all__ = ["DEFAULT_C", "DEFAULT_C_GRID", "GRID_MAX_TRAIN", "GRID_MAX_VAL", "HeadFit", "fit_linear_head",
           "stratified_folds", "stratified_split"]
