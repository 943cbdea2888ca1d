"""Leaderboard statistics and LogME against hand-computed values and direct closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from zoo_core.ranking import logme as lm
from zoo_core.stats import kendall_tau, mcnemar_exact, spearman_rho, wilson_interval


def test_wilson_interval_matches_hand_computed_values():
    # 8/10, z = 1.96: centre (0.8 + 0.19208) / 1.38416, half 1.96·sqrt(0.016 + 0.0009604) / 1.38416
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.49016, abs=1e-4) and high == pytest.approx(0.94332, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and 0.15 < wilson_interval(0, 20)[1] < 0.17  # not a 0-width interval
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(20, 20)[0] < 0.85
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo_small, hi_small = wilson_interval(24, 48)
    lo_big, hi_big = wilson_interval(2400, 4800)
    assert hi_big - lo_big < (hi_small - lo_small) / 5  # 100× the images: 10× narrower


def test_mcnemar_exact_matches_binomial_tails():
    a = [True] * 10 + [False] * 0 + [True] * 5
    b = [False] * 10 + [True] * 5
    r = mcnemar_exact(a, b)
    assert (r["a_only"], r["b_only"]) == (10, 0)
    assert r["p_value"] == pytest.approx(2 * 0.5**10)
    # 5 vs 1 discordant: P(X ≤ 1 | n=6) = 7/64, two-sided 14/64
    a = [True] * 5 + [False] + [True] * 20
    b = [False] * 5 + [True] + [True] * 20
    assert mcnemar_exact(a, b)["p_value"] == pytest.approx(14 / 64)
    # one image apart is a tie (p = 1); identical predictions too
    assert mcnemar_exact([True, False, True], [True, True, True])["p_value"] == 1.0
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0
    with pytest.raises(ValueError, match="same images"):
        mcnemar_exact([True], [True, False])


def test_mcnemar_agrees_with_scipy_binomtest():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.random(200) < 0.7, rng.random(200) < 0.6
        r = mcnemar_exact(a, b)
        n = r["a_only"] + r["b_only"]
        expect = scipy.stats.binomtest(r["a_only"], n, 0.5).pvalue if n else 1.0
        assert r["p_value"] == pytest.approx(expect, rel=1e-9)


def test_rank_correlations_match_scipy_with_ties():
    x = [0.1, 0.4, 0.4, 0.9, 0.3, 0.8]
    y = [1, 3, 2, 6, 2, 5]
    assert kendall_tau(x, y) == pytest.approx(scipy.stats.kendalltau(x, y).statistic)
    assert spearman_rho(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau([1], [1])) and math.isnan(spearman_rho([1, 1], [2, 3]))


def _direct_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, F Fᵀ/α + I/β), evaluated densely."""
    n = len(y)
    cov = f @ f.T / alpha + np.eye(n) / beta
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return float(-0.5 * (n * math.log(2 * math.pi) + logdet + y @ np.linalg.solve(cov, y)))


@pytest.mark.parametrize("n,d", [(30, 8), (12, 40)])  # N > D and N < D take different spectra
def test_logme_evidence_equals_the_closed_form(n, d):
    rng = np.random.default_rng(1)
    f = rng.normal(size=(n, d))
    y = (rng.random(n) < 0.5).astype(float)
    s, uy = lm._spectrum(f, y[:, None])
    for alpha, beta in [(1.0, 1.0), (0.3, 4.0), lm._maximise(s, uy[:, 0], float(y @ y), n, 11, 1e-2)]:
        ours = lm.evidence(s, uy[:, 0], float(y @ y), n, d, alpha, beta)
        assert ours == pytest.approx(_direct_evidence(f, y, alpha, beta), rel=1e-8, abs=1e-8)


def test_logme_fixed_point_improves_the_evidence():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(60, 10))
    y = (f[:, 0] > 0).astype(float)
    s, uy = lm._spectrum(f, y[:, None])
    alpha, beta = lm._maximise(s, uy[:, 0], float(y @ y), 60, 50, 1e-6)
    best = lm.evidence(s, uy[:, 0], float(y @ y), 60, 10, alpha, beta)
    for fa, fb in [(2, 1), (0.5, 1), (1, 2), (1, 0.5)]:  # a local maximum in both directions
        assert best >= lm.evidence(s, uy[:, 0], float(y @ y), 60, 10, alpha * fa, beta * fb) - 1e-9


def test_logme_orders_informative_weak_and_noise_features():
    rng = np.random.default_rng(3)
    n, k, d = 300, 5, 32
    y = rng.integers(0, k, n)
    centres = rng.normal(size=(k, d))
    informative = centres[y] * 2.0 + rng.normal(size=(n, d))
    weak = centres[y] * 0.4 + rng.normal(size=(n, d))
    noise = rng.normal(size=(n, d))
    scores = [lm.logme(x, y) for x in (informative, weak, noise)]
    assert scores[0] > scores[1] > scores[2]
    with pytest.raises(ValueError, match="NaN"):
        lm.logme(np.full((4, 2), np.nan), [0, 1, 0, 1])
