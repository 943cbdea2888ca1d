"""The converged linear-head fit (zoo_core.headfit) and the default feature-extraction run built on it.

Unit tests use small synthetic feature matrices. The end-to-end test trains on a generated
10-class image set whose classes overlap, and checks the default run against a tuned scikit-learn probe
on the very same cached features, against the classic recipe, and against itself with another seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import zoo_core
from zoo_core.errors import DataError
from zoo_core.headfit import DEFAULT_C_GRID, HeadFit, fit_linear_head, objective, stratified_split
from zoo_core.headfit import grid as headfit_grid
from zoo_core.headfit.precond import LowRank, Precond, correlation
from zoo_core.headfit.split import stratified_subsample


def blobs(n: int = 600, d: int = 16, k: int = 3, spread: float = 4.0, seed: int = 0,
          correlated: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian class blobs (``spread`` = distance scale of the class means; large = separable)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=g) * spread
    y = torch.arange(n) % k
    x = means[y] + torch.randn(n, d, generator=g)
    if correlated:  # deep-feature-like: strongly correlated, badly scaled columns, non-zero means
        mix = torch.randn(d, d, generator=g) * torch.logspace(0, -2, d)[:, None]
        x = x @ mix * torch.logspace(-1, 1, d) + 3.0
    return x, y


def accuracy(fit: HeadFit, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((x.float() @ fit.weight.T + fit.bias).argmax(1) == y).float().mean())


# ---------------------------------------------------------------------------------------------- unit


def test_separable_data_is_fitted_and_the_choice_recorded() -> None:
    x, y = blobs(spread=4.0)
    fit = fit_linear_head(x, y, 3)
    assert fit.train_accuracy == 1.0 and accuracy(fit, x, y) == 1.0
    assert fit.selection == "grid" and fit.converged
    assert fit.weight.shape == (3, 16) and fit.weight.dtype == torch.float32
    cfg = fit.config()
    json.dumps(cfg)  # JSON-ready: goes into the run's config.json
    assert cfg["l2"] == fit.l2 > 0 and cfg["C"] == pytest.approx(1 / (fit.l2 * len(y)))
    assert cfg["converged"] is True and cfg["iterations"] == fit.iterations and cfg["seconds"] > 0
    grid_cs = [g["C"] for g in cfg["grid"]]
    assert sorted(grid_cs) == pytest.approx(sorted(DEFAULT_C_GRID))  # small problem: every value fitted
    assert cfg["C"] == pytest.approx(next(g["C"] for g in cfg["grid"] if g["l2"] == pytest.approx(fit.l2)))
    assert cfg["inner_split"] == {"train": 480, "val": 120, "grid_train": 480, "grid_val": 120}


def test_generalises_on_overlapping_classes() -> None:
    x, y = blobs(n=1200, d=20, k=4, spread=0.6, seed=1)
    fit = fit_linear_head(x[:900], y[:900], 4)
    acc = accuracy(fit, x[900:], y[900:])
    assert 0.6 < acc < 0.99  # overlapping: clearly learnt, clearly not perfect
    assert fit.val_accuracy is not None and fit.train_accuracy < 1.0


def test_explicit_l2_skips_the_grid() -> None:
    x, y = blobs()
    fit = fit_linear_head(x, y, 3, l2=0.01)
    assert fit.selection == "given" and fit.grid == [] and fit.l2 == 0.01
    assert fit.config()["C"] == pytest.approx(1 / (0.01 * len(y)))


def test_solution_matches_scikit_learn_for_the_same_c() -> None:
    """Same objective as LogisticRegression(C) on standardised features, converged to the same optimum."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    x, y = blobs(n=400, d=12, k=4, spread=0.8, seed=3, correlated=True)
    c = 0.05
    fit = fit_linear_head(x, y, 4, l2=1 / (c * len(y)), tol=1e-10, max_iter=500)
    mean, std = x.mean(0), x.std(0, unbiased=False)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # a tiny problem: threads only cost on a shared 2-core box
        ref = linear_model.LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(((x - mean) / std).numpy(),
                                                                                   y.numpy())
    p_ref = torch.as_tensor(ref.predict_proba(((x - mean) / std).numpy()), dtype=torch.float32)
    p_ours = torch.softmax(x @ fit.weight.T + fit.bias, 1)
    assert (p_ours - p_ref).abs().max() < 2e-3
    assert fit.converged


def test_l2_grid_and_c_grid_are_equivalent() -> None:
    x, y = blobs(n=300, spread=1.0)
    by_c = fit_linear_head(x, y, 3, c_grid=[0.01, 1.0])
    by_l2 = fit_linear_head(x, y, 3, l2_grid=[1 / (0.01 * 300), 1 / (1.0 * 300)])
    assert by_c.l2 == pytest.approx(by_l2.l2) and by_c.C == pytest.approx(by_l2.C)
    assert torch.allclose(by_c.weight, by_l2.weight, atol=1e-5)


def test_deterministic_for_a_seed() -> None:
    x, y = blobs(n=500, spread=0.7, seed=2)
    a, b = fit_linear_head(x, y, 3, seed=5), fit_linear_head(x, y, 3, seed=5)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias) and a.l2 == b.l2
    c = fit_linear_head(x, y, 3, seed=6)
    assert c.info["seed"] == 6
    assert [g["val_loss"] for g in c.grid] != [g["val_loss"] for g in a.grid]  # another inner split


def test_half_precision_and_strided_features_fit_like_float32() -> None:
    x, y = blobs(n=300, d=24, spread=1.0)
    ref = fit_linear_head(x, y, 3, l2=0.01)
    wide = torch.zeros(300, 48)
    wide[:, ::2] = x
    assert torch.allclose(fit_linear_head(wide[:, ::2], y, 3, l2=0.01).weight, ref.weight, atol=1e-5)
    for half in (torch.float16, torch.bfloat16):  # converted a chunk at a time: the same values, the same fit
        xh = x.to(half)
        assert torch.allclose(fit_linear_head(xh, y, 3, l2=0.01).weight,
                              fit_linear_head(xh.float(), y, 3, l2=0.01).weight, atol=1e-5)


def test_class_weight_balanced_raises_minority_recall() -> None:
    x, y = blobs(n=900, d=10, k=3, spread=0.5, seed=4)
    keep = (y != 2) | (torch.arange(900) % 10 == 0)  # class 2 keeps ~1/10 of its samples
    x, y = x[keep], y[keep]
    plain = fit_linear_head(x, y, 3, l2=1e-3)
    balanced = fit_linear_head(x, y, 3, l2=1e-3, class_weight="balanced")
    recall = [float(((x[y == 2] @ f.weight.T + f.bias).argmax(1) == 2).float().mean()) for f in (plain, balanced)]
    assert recall[1] > recall[0] + 0.1
    assert balanced.info["class_weight"] == "balanced"


def test_sample_weights_scale_free_and_zero_weight_drops_rows() -> None:
    x, y = blobs(n=300, spread=0.8, seed=5)
    ref = fit_linear_head(x, y, 3, l2=0.01)
    doubled = fit_linear_head(x, y, 3, l2=0.01, sample_weight=torch.full((300,), 2.0))
    assert torch.allclose(doubled.weight, ref.weight, atol=1e-4)
    w = (torch.arange(300) < 200).float()
    masked = fit_linear_head(x, y, 3, l2=0.01, sample_weight=w)
    dropped = fit_linear_head(x[:200], y[:200], 3, l2=0.01)
    assert torch.allclose(masked.weight, dropped.weight, atol=1e-3)


def test_class_without_samples_is_never_predicted() -> None:
    x, y = blobs(n=200, spread=3.0)
    with pytest.warns(UserWarning, match="no training samples"):
        fit = fit_linear_head(x, y, 5)
    assert fit.weight.shape == (5, 16)
    assert torch.all(fit.weight[3:] == 0)
    logits = x @ fit.weight.T + fit.bias
    assert torch.all(logits[:, 3:].max(1).values < logits[:, :3].min(1).values)


def test_label_smoothing_softens_the_fit() -> None:
    x, y = blobs(spread=4.0)
    sharp = fit_linear_head(x, y, 3, l2=1e-4)
    smooth = fit_linear_head(x, y, 3, l2=1e-4, label_smoothing=0.2)
    p = [torch.softmax(x @ f.weight.T + f.bias, 1).max(1).values.mean() for f in (sharp, smooth)]
    assert p[1] < p[0] and float(p[1]) == pytest.approx(0.8 + 0.2 / 3, abs=0.03)


def test_coarse_to_fine_search_on_a_subsample(monkeypatch: pytest.MonkeyPatch) -> None:
    """The large-problem path (subsampled inner split, decades then half-decades) picks what a full grid does."""
    x, y = blobs(n=3000, d=32, k=5, spread=0.35, seed=6, correlated=True)
    full = fit_linear_head(x, y, 5)
    monkeypatch.setattr(headfit_grid, "FULL_GRID_WORK", 0)  # the documented seam
    fast = fit_linear_head(x, y, 5, grid_max_train=1500)
    assert fast.info["grid_search"] == "coarse-to-fine" and full.info["grid_search"] == "full"
    assert 1490 <= fast.info["inner_split"]["grid_train"] <= 1500 and fast.info["inner_split"]["train"] == 2400
    stages = {g["stage"] for g in fast.grid}
    assert "coarse" in stages and "fine" in stages and len(fast.grid) < len(DEFAULT_C_GRID)
    assert abs(math.log10(fast.C / full.C)) <= 1.0  # within a decade of the full grid's choice
    assert abs(accuracy(fast, x, y) - accuracy(full, x, y)) < 0.02
    assert fast.converged and fast.info["refit"]["stop"] in ("gradient", "loss change", "resolution")


def test_stratified_split_and_subsample_keep_class_proportions() -> None:
    y = torch.tensor([0] * 10 + [1] * 5 + [2] * 1)[torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    tr, va = stratified_split(y, 4, 0.2, seed=0)  # class 3 has no samples
    assert torch.equal(torch.sort(torch.cat([tr, va])).values, torch.arange(16))  # a partition …
    assert torch.equal(tr, tr.sort().values) and torch.equal(va, va.sort().values)  # … of sorted indices
    assert torch.bincount(y[va], minlength=4).tolist() == [2, 1, 0, 0]  # round(n_c / 5), a train row kept
    again, other = stratified_split(y, 4, 0.2, seed=0), stratified_split(y, 4, 0.2, seed=3)
    assert torch.equal(again[1], va) and not torch.equal(other[1], va)  # seeded
    sub = stratified_subsample(tr, y, 6, seed=1)  # 8 + 4 + 1 rows -> round(n_c * 6 / 13), at least one
    assert torch.bincount(y[sub], minlength=4).tolist() == [4, 2, 1, 0]
    assert torch.equal(sub, sub.sort().values) and bool(torch.isin(sub, tr).all())
    assert torch.equal(stratified_subsample(tr, y, 13, seed=1), tr)  # under the cap: all of it


def test_preconditioner_is_an_exact_reparameterisation() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 40, generator=g) @ torch.randn(40, 40, generator=g)
    s = correlation((a - a.mean(0)) / a.std(0), seed=0)
    pre = Precond(s, 1e-3)
    u, gw = torch.randn(3, 40, dtype=torch.float64), torch.randn(3, 40, dtype=torch.float64)
    w = pre.to_w(u)
    assert torch.allclose(pre.to_u(w), u, atol=1e-4)
    # grad_u is the adjoint of to_w: <G, W(U)> = <grad_u(G), U>
    assert float((gw * w).sum()) == pytest.approx(float((pre.grad_u(gw) * u).sum()), rel=1e-4)
    # it whitens: W S W^T for W = U L^-1 is U (L^-1 S L^-T) U^T, close to U U^T where S dominates gamma
    lower = pre.lower.double()
    whitened = torch.linalg.solve_triangular(lower, torch.linalg.solve_triangular(lower, s.double(), upper=False).T,
                                             upper=False)
    eig = torch.linalg.eigvalsh(whitened)
    assert float(eig.max()) <= 1.0 + 1e-3


def test_converges_on_badly_conditioned_features() -> None:
    x, y = blobs(n=2000, d=64, k=6, spread=0.3, seed=7, correlated=True)
    fit = fit_linear_head(x, y, 6)
    assert fit.converged and fit.iterations < fit.info["max_iter"]
    assert fit.info["refit"]["optimality"] < 0.05 or fit.info["refit"]["stop"] != "max_iter"


def nearly_dead_channel(n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping blobs plus a channel that is almost dead on the training rows (std ~1e-5, the others ~1)
    and happens to track class 0 there: a pooled CNN feature of a far domain."""
    x, y = blobs(n=n, d=16, k=3, spread=1.0, seed=3)
    g = torch.Generator().manual_seed(4)
    x[:, 15] = 1e-5 * (y == 0).float() + 1e-7 * torch.randn(n, generator=g)
    return x, y


@pytest.mark.parametrize("floor", [objective.STD_FLOOR, 0.0])
def test_a_nearly_dead_feature_cannot_blow_up_an_unseen_images_logits(
        floor: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objective, "STD_FLOOR", floor)
    x, y = nearly_dead_channel()
    fit = fit_linear_head(x, y, 3, seed=0)
    awake = x[:20].clone()
    awake[:, 15] = 1.0  # the channel wakes up on images unlike the training set
    logits = awake @ fit.weight.T + fit.bias
    if floor:
        assert float(logits.abs().max()) < 50 and fit.info["std_floor"].startswith(str(floor))
        assert float(fit.weight[:, 15].abs().max()) < 100
    else:  # the plain standardisation this guards against: the channel's raw weight is enormous
        assert float(logits.abs().max()) > 1000


def test_one_class_fits_only_the_bias() -> None:
    x = torch.randn(20, 4)
    fit = fit_linear_head(x, torch.zeros(20, dtype=torch.long), 1)
    assert fit.selection == "default" and torch.all(fit.weight == 0)


@pytest.mark.parametrize("bad, match", [
    (dict(x=torch.zeros(5)), "2-D"),
    (dict(x=torch.zeros(5, 3, dtype=torch.long)), "floating point"),
    (dict(y=torch.tensor([0, 1, 2, 3, 4])), r"\[0, 2\]"),
    (dict(y=torch.tensor([0, 1])), "one entry per feature row"),
    (dict(y=torch.zeros(5)), "integer class indices"),
    (dict(l2=-1.0), "l2 must be"),
    (dict(l2_grid=[]), "l2_grid must be"),
    (dict(c_grid=[0.0]), "c_grid must be"),
    (dict(c_grid=[1.0], l2_grid=[1.0]), "not both"),
    (dict(class_weight="often"), "class_weight="),
    (dict(class_weight=[1.0, 2.0]), "one per class"),
    (dict(sample_weight=[1.0, 2.0]), "sample_weight has 2 entries"),
    (dict(sample_weight=[0.0] * 5), "sum to zero"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(x=torch.tensor([[0.0, 1.0]] * 4 + [[math.nan, 1.0]])), "NaN/inf"),
])
def test_bad_input_is_a_data_error(bad: dict, match: str) -> None:
    args = {"x": torch.randn(5, 2), "y": torch.tensor([0, 1, 2, 0, 1])} | bad
    x, y = args.pop("x"), args.pop("y")
    with pytest.raises(DataError, match=match):
        fit_linear_head(x, y, 3, **args)


# ---------------------------------------------------------------------------------------- end to end

PER_TRAIN, PER_VAL, SIZE, K = 70, 30, 32, 10


def overlap_image(cls: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy coloured grating: hue and orientation follow the class, with noise that overlaps classes."""
    theta = 2 * np.pi * cls / K + rng.normal(0, 0.25)
    colour = 128 + 70 * np.array([np.cos(theta), np.cos(theta - 2.094), np.cos(theta + 2.094)])
    phi = np.pi * cls / K + rng.normal(0, 0.4)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    grating = np.sin(rng.uniform(0.25, 0.6) * (np.cos(phi) * xx + np.sin(phi) * yy) + rng.uniform(0, 2 * np.pi))
    img = colour + 40 * grating[..., None] + rng.normal(0, 25, (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_overlap_folder(root: Path) -> Path:
    """``root/{train,val}/classN/*.png``: 10 overlapping classes, 70 + 30 images each (1,000 in all)."""
    for split, per in (("train", PER_TRAIN), ("val", PER_VAL)):
        for c in range(K):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per):
                rng = np.random.default_rng([c, i, split == "val"])
                Image.fromarray(overlap_image(c, rng)).save(d / f"{i:03d}.png")
    return root


def sklearn_probe(xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """The tuned scikit-learn linear probe under the same protocol: standardised features (each std floored
    at ``STD_FLOOR`` x the median, as ours), the same stratified inner split and C grid, the same rule (lowest inner-val loss among the C values within one
    standard error of the best inner-val accuracy), then a refit on all training features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    scaler = StandardScaler().fit(xtr)
    std = xtr.std(0)
    scaler.scale_ = np.maximum(scaler.scale_, objective.STD_FLOOR * np.median(std[std > 1e-7 * std.max()]))
    z, zva = scaler.transform(xtr), scaler.transform(xva)
    tr, va = (i.numpy() for i in stratified_split(torch.as_tensor(ytr), K, 0.2, seed))
    scores = []
    with threadpool_limits(1):  # tiny problems: threads only cost on a shared 2-core box
        lr = LogisticRegression(tol=1e-6, max_iter=10_000, warm_start=True)  # a strictly convex path
        for c in DEFAULT_C_GRID:
            lr.set_params(C=c).fit(z[tr], ytr[tr])
            scores.append((lr.score(z[va], ytr[va]), log_loss(ytr[va], lr.predict_proba(z[va]), labels=range(K)), c))
        best = max(s[0] for s in scores)
        se = math.sqrt(best * (1 - best) / len(va))
        chosen = min((s for s in scores if s[0] >= best - se - 1e-12), key=lambda s: (s[1], -s[0], s[2]))[2]
        final = LogisticRegression(C=chosen, tol=1e-6, max_iter=10_000).fit(z, ytr)
    return final.predict(zva), chosen


@pytest.fixture(scope="module")
def probe_runs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Default run (seed 0 and 1), classic recipe and the scikit-learn probe, on one generated image set.

    Module-scoped (the runs share the feature cache), so it sets the offline, temporary caches itself.
    """
    pytest.importorskip("sklearn")
    root = tmp_path_factory.mktemp("probe")
    with pytest.MonkeyPatch.context() as mp:
        for var, sub in (("BACKBONE_ZOO_CACHE", "zoo-cache"), ("TORCH_HOME", "torch"), ("HF_HOME", "hf")):
            mp.setenv(var, str(root / sub))
        mp.setenv("HF_HUB_OFFLINE", "1")
        data = make_overlap_folder(root / "data")
        torch.manual_seed(0)  # a fixed random-init backbone: the same features for every run
        ckpt = root / "resnet18-init.pth"
        torch.save(zoo_core.create("resnet18", num_classes=K, weights=None).state_dict(), ckpt)
        common = dict(strategy="feature-extraction", weights=str(ckpt), image_size=SIZE, out_dir=str(root / "runs"),
                      progress=False)
        default = zoo_core.train("resnet18", str(data), seed=0, run_name="default", **common)
        reseeded = zoo_core.train("resnet18", str(data), seed=1, run_name="seed1", **common)
        classic = zoo_core.train("resnet18", str(data), seed=0, run_name="classic", epochs=3, optimizer="sgd",
                                 lr=1e-3, momentum=0.0, batch_size=32, **common)

        # the very features the runs trained on: the trainer's cache entries, under the trainer's keys
        from zoo_core import cache, runtime
        from zoo_core import data as zdata
        from zoo_core.cache import policy

        split = zdata.load_data(str(data), progress=False)
        adapter, _ = zoo_core.get_adapter("resnet18")
        model = zoo_core.create("resnet18", num_classes=K, weights=str(ckpt))
        dc = adapter.data_config("resnet18", "DEFAULT").with_image_size(SIZE)
        fx = {}
        for name in ("train", "val"):
            key = cache.feature_key(backbone="resnet18", weights=str(ckpt), data_config=dc,
                                    fingerprint=split.fingerprint, split=name,
                                    precision=runtime.resolve_precision("auto", "cpu"),
                                    pass_modes=policy.pass_modes("auto", "cpu", len(getattr(split, name))))
            fx[name] = cache.extract_features(model, adapter, getattr(split, name), dc, key=key, progress=False)
            assert fx[name].from_cache, "the probe must use the trainer's cached features"
        xtr, ytr = fx["train"].features.numpy(), fx["train"].labels.numpy()
        xva, yva = fx["val"].features.numpy(), fx["val"].labels.numpy()
        pred, sk_c = sklearn_probe(xtr, ytr, xva, seed=0)
    return SimpleNamespace(default=default, reseeded=reseeded, classic=classic, sk_acc=float((pred == yva).mean()),
                           sk_c=sk_c, n_val=len(yva))


def test_default_run_matches_a_tuned_sklearn_probe(probe_runs: SimpleNamespace) -> None:
    ours = probe_runs.default.metrics["val_acc"]
    assert probe_runs.n_val == K * PER_VAL
    assert 0.5 < ours < 0.95, f"the generated classes should overlap (val accuracy {ours:.3f})"
    assert abs(ours - probe_runs.sk_acc) <= 0.01, (ours, probe_runs.sk_acc)


def test_classic_recipe_falls_short(probe_runs: SimpleNamespace) -> None:
    classic = probe_runs.classic
    assert len(classic.history) == 3 and classic.config["epochs"] == 3  # epochs are respected when given
    assert "head_fit" not in classic.config and classic.config["lr"] == 1e-3
    assert probe_runs.default.metrics["val_acc"] - classic.metrics["val_acc"] >= 0.05


def test_default_run_is_stable_across_seeds(probe_runs: SimpleNamespace) -> None:
    a, b = probe_runs.default, probe_runs.reseeded
    assert b.config["feature_cache_hit"] and b.config["head_fit"]["seed"] == 1
    assert abs(a.metrics["val_acc"] - b.metrics["val_acc"]) <= 0.01


def test_default_run_records_the_converged_fit(probe_runs: SimpleNamespace) -> None:
    run = probe_runs.default
    saved = json.loads((run.run_dir / "config.json").read_text())
    assert saved["epochs"] is None and saved["lr"] is None
    hf = saved["head_fit"]
    assert hf["selection"] == "grid" and hf["converged"] is True
    assert hf["l2"] > 0 and hf["C"] == pytest.approx(1 / (hf["l2"] * hf["n_samples"]))
    assert any(g["C"] == pytest.approx(hf["C"]) for g in hf["grid"])
    assert hf["iterations"] >= 1 and hf["seconds"] > 0
    assert len(run.history) == 1 and run.history[0]["val_acc"] == pytest.approx(run.metrics["val_acc"])


def test_low_rank_preconditioner_for_fewer_rows_than_features() -> None:
    """Few images, wide features (VGG's 4,096): the correlation is kept low rank, never factorised D x D."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(50, 20, generator=g) @ torch.randn(20, 200, generator=g)  # 50 rows of rank 20 in 200 dims
    z = (a - a.mean(0)) / a.std(0)
    s = correlation(z, seed=0)
    assert isinstance(s, LowRank) and s.q.shape[0] == 200 and s.lam.numel() <= 20
    dense = (z.double().T @ z.double()) / 50
    assert torch.allclose(s.q @ torch.diag(s.lam) @ s.q.T, dense, atol=1e-8)  # the same matrix
    gamma = 1e-2
    pre = Precond(s, gamma)
    u, gw = torch.randn(3, 200, dtype=torch.float64), torch.randn(3, 200, dtype=torch.float64)
    w = pre.to_w(u)
    assert torch.allclose(pre.to_u(w), u, atol=1e-8)
    assert float((gw * w).sum()) == pytest.approx(float((pre.grad_u(gw) * u).sum()), rel=1e-8)
    # M^-1 (S + gamma I) M^-1 = I: exactly whitening, like the dense Cholesky factor
    eye = torch.eye(200, dtype=torch.float64)
    m_inv = pre.to_w(eye)
    assert torch.allclose(m_inv @ (dense + gamma * eye) @ m_inv, eye, atol=1e-6)
    x = torch.cat([torch.randn(30, 300) + 2 * torch.randn(1, 300), torch.randn(30, 300) - 2 * torch.randn(1, 300)])
    y = torch.arange(2).repeat_interleave(30)
    fit = fit_linear_head(x, y, 2)
    assert fit.info["preconditioner"].startswith("correlation-low-rank") and fit.converged
    assert accuracy(fit, x, y) == 1.0
