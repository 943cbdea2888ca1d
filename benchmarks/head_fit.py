"""Our default head fit vs scikit-learn's tuned linear probe, on the same features.

Both see the same training features and the same protocol (the standard linear probe): standardised
features, the same stratified inner split (:func:`zoo_core.headfit.stratified_split`, seeded), the same
grid of ``C`` (:data:`zoo_core.headfit.DEFAULT_C_GRID`), the same selection rule (lowest inner-val loss
among the ``C`` values within one standard error of the best inner-val accuracy), then a refit on all of
the training features with the chosen ``C``. scikit-learn runs ``LogisticRegression`` (lbfgs, multinomial)
for every ``C`` of the grid, warm-started along the path (strong to weak; the problems are strictly
convex, so this changes the time, not the answer) and capped at ``--sklearn-max-iter`` iterations per fit.
Both are scored on held-out features; accuracy and wall time are printed side by side.

    .venv/bin/python benchmarks/head_fit.py                        # 50,000 x 2,048 synthetic, 10 classes
    .venv/bin/python benchmarks/head_fit.py --n 5000 --dim 512     # quicker
    .venv/bin/python benchmarks/head_fit.py --features F.npy --labels L.npy   # e.g. a feature-cache entry
    .venv/bin/python benchmarks/head_fit.py --backbone resnet18 --data path/to/images [--weights None]

Synthetic features are ReLU'd Gaussian class clusters whose means overlap (``--separation``) in a
low-rank-plus-noise geometry, like pooled CNN features: strongly correlated columns, accuracy well below
100 %, so the choice of regularisation matters. With ``--backbone``/``--data`` the features are extracted
(and cached) by :func:`zoo_core.cache.extract_features`, training split vs validation split. The
machine may be shared: timings are wall clock, best of ``--repeats`` for our fit.
"""

from __future__ import annotations

import math
import os
import time
import warnings

import _common  # noqa: E402  (the repository on sys.path)
import numpy as np
import torch

from zoo_core.headfit import DEFAULT_C_GRID, fit_linear_head, stratified_split  # noqa: E402


def synthetic(n: int, dim: int, classes: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ReLU'd overlapping Gaussian clusters in a random low-rank-plus-noise geometry."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, separation, (classes, dim)).astype(np.float32)
    mix = rng.normal(0, 1 / np.sqrt(64), (64, dim)).astype(np.float32)
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(0, 1, (n, 64)).astype(np.float32) @ mix + rng.normal(0, 0.5, (n, dim)).astype(
        np.float32)
    return np.maximum(x, 0, dtype=np.float32), y.astype(np.int64)


def backbone_features(backbone: str, data: str, weights: str | None, image_size: int | None,
                      batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train x, train y, val x, val y) of ``backbone`` on the image folder ``data``, through the cache."""
    import zoo_core
    from zoo_core import cache, runtime
    from zoo_core import data as zdata

    split = zdata.load_data(data, progress=True)
    adapter, _ = zoo_core.get_adapter(backbone)
    model = zoo_core.create(backbone, num_classes=len(split.classes), weights=weights)
    dc = adapter.data_config(backbone, weights if isinstance(weights, str) and "/" not in weights
                             and not weights.endswith((".pt", ".pth", ".safetensors")) else "DEFAULT")
    dc = dc.with_image_size(image_size)
    out = []
    for name in ("train", "val"):
        key = cache.feature_key(backbone=backbone, weights=weights, data_config=dc, fingerprint=split.fingerprint,
                                split=name, precision=runtime.resolve_precision("auto", "cpu"))
        fs = cache.extract_features(model, adapter, getattr(split, name), dc, key=key, batch_size=batch_size,
                                    progress=True)
        out += [fs.features.numpy(), fs.labels.numpy()]
    return out[0], out[1], out[2], out[3]


def sklearn_probe(x: np.ndarray, y: np.ndarray, k: int, seed: int, max_iter: int) -> dict:
    """The scikit-learn probe under our protocol; returns the fitted model, scaler, choice and timing."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x).astype(np.float32)
    tr, va = (t.numpy() for t in stratified_split(torch.from_numpy(y), k, 0.2, seed))
    rows, capped = [], 0
    lr = LogisticRegression(max_iter=max_iter, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in DEFAULT_C_GRID:
            t1 = time.perf_counter()
            lr.set_params(C=c).fit(z[tr], y[tr])
            capped += int(lr.n_iter_.max() >= max_iter)
            acc = lr.score(z[va], y[va])
            loss = log_loss(y[va], lr.predict_proba(z[va]), labels=range(k))
            rows.append((c, acc, loss, int(lr.n_iter_.max()), time.perf_counter() - t1))
            print(f"  sklearn C={c:<9.3g} inner-val acc {acc:.4f} loss {loss:.4f}  {rows[-1][3]:>4} iterations "
                  f"{rows[-1][4]:6.1f}s", flush=True)
        best = max(r[1] for r in rows)
        se = math.sqrt(best * (1 - best) / len(va))
        chosen = min((r for r in rows if r[1] >= best - se - 1e-12), key=lambda r: (r[2], -r[1], r[0]))
        final = LogisticRegression(C=chosen[0], max_iter=max_iter).fit(z, y)
        capped += int(final.n_iter_.max() >= max_iter)
    return {"model": final, "scaler": scaler, "C": chosen[0], "val_acc": chosen[1], "seconds": time.perf_counter() - t0,
            "capped": capped, "fits": len(rows) + 1}


def main() -> None:
    """Run both probes and print the table."""
    ap = _common.parser(__doc__, repeats=1, seed=0)
    ap.add_argument("--n", type=int, default=50_000, help="training rows (synthetic)")
    ap.add_argument("--test", type=int, default=10_000, help="test rows (synthetic)")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--separation", type=float, default=0.06, help="spread of the class means (synthetic)")
    ap.add_argument("--features", help=".npy [N, D] training features instead of synthetic ones")
    ap.add_argument("--labels", help=".npy [N] labels for --features (20%% of them become the test set)")
    ap.add_argument("--backbone", help="extract real features with this backbone (needs --data)")
    ap.add_argument("--data", help="image folder for --backbone (its validation split is the test set)")
    ap.add_argument("--weights", default="DEFAULT", help="weights for --backbone ('None': random init)")
    ap.add_argument("--image-size", type=int, default=None, help="input size for --backbone")
    ap.add_argument("--batch-size", type=int, default=64, help="extraction batch size for --backbone")
    ap.add_argument("--sklearn-max-iter", type=int, default=100, help="lbfgs iterations per scikit-learn fit")
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.backbone or args.data:
        if not (args.backbone and args.data):
            ap.error("--backbone and --data go together")
        weights = None if str(args.weights).lower() == "none" else args.weights
        x, y, xt, yt = backbone_features(args.backbone, args.data, weights, args.image_size, args.batch_size)
        k = int(max(y.max(), yt.max())) + 1
        source = f"{args.backbone} features of {args.data}"
    elif args.features:
        x_all, y_all = np.load(args.features).astype(np.float32), np.load(args.labels).astype(np.int64)
        k = int(y_all.max()) + 1
        tr, te = stratified_split(torch.from_numpy(y_all), k, 0.2, args.seed + 1)
        x, y, xt, yt = x_all[tr.numpy()], y_all[tr.numpy()], x_all[te.numpy()], y_all[te.numpy()]
        source = args.features
    else:
        k = args.classes
        x_all, y_all = synthetic(args.n + args.test, args.dim, k, args.separation, args.seed)
        x, y, xt, yt = x_all[:args.n], y_all[:args.n], x_all[args.n:], y_all[args.n:]
        source = f"synthetic (separation {args.separation})"
    print(f"features: {source}: train {x.shape}, test {xt.shape}, {k} classes; torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} CPUs", flush=True)

    xs, ys = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
    ours_s, fit = math.inf, None
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        fit = fit_linear_head(xs, ys, k, seed=args.seed)
        ours_s = min(ours_s, time.perf_counter() - t0)
    cfg = fit.config()
    ours_acc = float(((torch.from_numpy(xt) @ fit.weight.T + fit.bias).argmax(1).numpy() == yt).mean())
    print(f"  ours: {len(fit.grid)} grid fits ({cfg.get('grid_search')}, on {cfg['inner_split']['grid_train']} of "
          f"{cfg['inner_split']['train']} inner-train rows), refit {fit.iterations} iterations "
          f"({cfg['refit']['stop']}); timing {cfg['timing']}")
    rows = [("ours: fit_linear_head (default)", cfg["C"], fit.val_accuracy, ours_acc, ours_s,
             f"{len(fit.grid)} + 1 fits")]

    if not args.skip_sklearn:
        sk = sklearn_probe(x, y, k, args.seed, args.sklearn_max_iter)
        acc = sk["model"].score(sk["scaler"].transform(xt).astype(np.float32), yt)
        note = f"{sk['fits']} fits" + (f", {sk['capped']} hit max_iter" if sk["capped"] else "")
        rows.append((f"scikit-learn LogisticRegression (max_iter {args.sklearn_max_iter})", sk["C"], sk["val_acc"],
                     acc, sk["seconds"], note))

    print(f"\n{'method':<46} {'C':>9} {'inner-val %':>11} {'test acc %':>10} {'wall s':>8}  notes")
    for name, c, val, acc, s, note in rows:
        print(f"{name:<46} {c:>9.3g} {100 * val:>11.2f} {100 * acc:>10.2f} {s:>8.1f}  {note}")
    if len(rows) == 2:
        print(f"accuracy difference (ours - sklearn): {100 * (rows[0][3] - rows[1][3]):+.2f} points; "
              f"wall-time ratio sklearn / ours: {rows[1][4] / rows[0][4]:.1f}x")


if __name__ == "__main__":
    main()
