"""The pass check's criterion judges what the linear head decides, not the feature norm."""

from __future__ import annotations

import importlib

import torch

from zoo_core.distributed import DistContext
from zoo_core.headfit import fit_linear_head

criterion = importlib.import_module("zoo_core.cache.criterion")
passes = importlib.import_module("zoo_core.cache.passes")
policy = importlib.import_module("zoo_core.cache.policy")


def _features(n: int = 240, dim: int = 32, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-structured features riding on a large common component, as pooled post-ReLU features do."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=g)
    x = 40.0 + centres[y] + 0.5 * torch.randn(n, dim, generator=g)
    return x, y


def _decisions(train: torch.Tensor, y: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    fit = fit_linear_head(train, y, int(y.max()) + 1, seed=0)
    return (test @ fit.weight.T + fit.bias).argmax(1)


def test_a_scramble_that_keeps_the_norm_is_rejected_and_a_common_offset_is_accepted():
    x, y = _features()
    train, test, ytrain = x[:160], x[160:], y[:160]
    mean = x.mean(0)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    scrambled = mean + (x - mean)[perm]  # same norm, same per-feature spread; which images are alike: gone
    offset = x + 6.0 * torch.linspace(-1, 1, x.shape[1])  # one shift for all images, 9 % of the norm
    # what each does to the head fitted on it: the scramble flips most decisions, the offset none
    reference = _decisions(train, ytrain, test)
    assert (_decisions(scrambled[:160], ytrain, scrambled[160:]) != reference).float().mean() > 0.5
    assert torch.equal(_decisions(offset[:160], ytrain, offset[160:]), reference)
    # the old relative-L2 yardstick got both wrong; the check gets both right, on a first batch of 64
    first = slice(0, 64)
    assert criterion.relative_error(scrambled, x) < 0.05 < criterion.relative_error(offset, x)
    bad = criterion.check_pass(scrambled[first], x[first], "scrambled")
    good = criterion.check_pass(offset[first], x[first], "offset")
    assert not bad.accepted and bad.error > 1.0 and "differ from fp32" in bad.message
    assert good.accepted and good.error < 1e-6 and good.criterion == criterion.CRITERION


def test_noise_is_judged_against_each_features_between_image_spread():
    x, _ = _features(64)
    spread = x.std(0)
    g = torch.Generator().manual_seed(2)
    small = x + 0.1 * spread * torch.randn(x.shape, generator=g)
    large = x + 1.0 * spread * torch.randn(x.shape, generator=g)
    assert abs(criterion.standardised_error(small, x) - 0.1) < 0.03
    assert abs(criterion.standardised_error(large, x) - 1.0) < 0.15
    assert criterion.check_pass(small, x, "small").accepted and not criterion.check_pass(large, x, "large").accepted


def test_choose_pass_records_every_verdict():
    x, _ = _features(16)
    x = x[:, :, None, None]  # a "batch" the passes below map to features
    ref = passes.ForwardPass("fp32", "fp32", lambda t: t.flatten(1))
    mean = x.flatten(1).mean(0)
    scrambled = passes.ForwardPass("int8", "int8", lambda t: mean + (t.flatten(1) - mean).flip(0))
    offset = passes.ForwardPass("bf16", "bf16", lambda t: t.flatten(1) + 5.0)
    checks: list[dict] = []
    chosen, _ = policy.choose_pass([scrambled, offset, ref], x, DistContext(), "auto", checks)
    assert chosen is offset
    assert [(c["pass"], c["accepted"], c["tolerance"]) for c in checks] == [
        ("int8", False, criterion.TOLERANCE), ("bf16", True, criterion.TOLERANCE)]
