"""Issue 7 benchmark: our default head fit vs scikit-learn's tuned linear probe, on the same features.

Both see the same training features and the same stratified inner split. scikit-learn follows the
standard linear-probe protocol: ``LogisticRegression`` (lbfgs, multinomial) on standardised features, fit
for every ``C`` of our grid on the inner-train part, the ``C`` with the best inner-val accuracy refit on
all of the training set. Both are scored on a held-out test set; accuracy and wall time are printed side
by side.

    .venv/bin/python benchmarks/head_fit.py                       # 50,000 x 2,048 synthetic, 10 classes
    .venv/bin/python benchmarks/head_fit.py --n 5000 --dim 512    # quicker
    .venv/bin/python benchmarks/head_fit.py --features F.npy --labels L.npy   # e.g. a feature-cache entry

Synthetic features are ReLU'd Gaussian class clusters whose means overlap (``--separation``), like
pooled CNN features: accuracy well below 100 %, so the choice of regularisation matters.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from zoo_core.headfit import DEFAULT_C_GRID, fit_linear_head, stratified_split


def synthetic(n: int, dim: int, classes: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ReLU'd overlapping Gaussian clusters in a random low-rank-plus-noise geometry."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, separation, (classes, dim)).astype(np.float32)
    mix = rng.normal(0, 1 / np.sqrt(64), (64, dim)).astype(np.float32)
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(0, 1, (n, 64)).astype(np.float32) @ mix + rng.normal(0, 0.5, (n, dim)).astype(
        np.float32)
    return np.maximum(x, 0, dtype=np.float32), y.astype(np.int64)


def main() -> None:
    """Run both probes and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50_000, help="training rows (synthetic)")
    ap.add_argument("--test", type=int, default=10_000, help="test rows (synthetic)")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--separation", type=float, default=0.06, help="spread of the class means (synthetic)")
    ap.add_argument("--features", help=".npy [N, D] training features instead of synthetic ones")
    ap.add_argument("--labels", help=".npy [N] labels for --features (20%% of them become the test set)")
    ap.add_argument("--sklearn-max-iter", type=int, default=1000)
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.features:
        x_all, y_all = np.load(args.features).astype(np.float32), np.load(args.labels).astype(np.int64)
        k = int(y_all.max()) + 1
        tr, te = stratified_split(torch.from_numpy(y_all), k, 0.2, args.seed + 1)
        x, y, xt, yt = x_all[tr.numpy()], y_all[tr.numpy()], x_all[te.numpy()], y_all[te.numpy()]
    else:
        k = args.classes
        x_all, y_all = synthetic(args.n + args.test, args.dim, k, args.separation, args.seed)
        x, y, xt, yt = x_all[:args.n], y_all[:args.n], x_all[args.n:], y_all[args.n:]
    print(f"features: train {x.shape}, test {xt.shape}, {k} classes; torch threads {torch.get_num_threads()}")

    t0 = time.perf_counter()
    fit = fit_linear_head(torch.from_numpy(x), torch.from_numpy(y), k, seed=args.seed)
    ours_s = time.perf_counter() - t0
    ours_acc = float(((torch.from_numpy(xt) @ fit.weight.T + fit.bias).argmax(1).numpy() == yt).mean())
    rows = [("ours: L-BFGS head fit (default)", f"{fit.config()['C']:.3g}", ours_acc, ours_s)]

    if not args.skip_sklearn:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        t0 = time.perf_counter()
        itr, iva = (t.numpy() for t in stratified_split(torch.from_numpy(y), k, 0.2, args.seed))
        scaler = StandardScaler().fit(x[itr])
        best = (-1.0, None)
        for c in DEFAULT_C_GRID:
            clf = LogisticRegression(C=c, max_iter=args.sklearn_max_iter).fit(scaler.transform(x[itr]), y[itr])
            acc = clf.score(scaler.transform(x[iva]), y[iva])
            print(f"  sklearn C={c:<8.3g} inner-val acc {acc:.4f}  ({time.perf_counter() - t0:.1f}s so far)")
            if acc > best[0]:
                best = (acc, c)
        scaler = StandardScaler().fit(x)
        clf = LogisticRegression(C=best[1], max_iter=args.sklearn_max_iter).fit(scaler.transform(x), y)
        sk_s = time.perf_counter() - t0
        rows.append(("scikit-learn LogisticRegression + C grid", f"{best[1]:.3g}", clf.score(scaler.transform(xt), yt),
                     sk_s))

    print(f"\n{'method':<42} {'C':>8} {'test acc %':>10} {'wall s':>8}")
    for name, c, acc, s in rows:
        print(f"{name:<42} {c:>8} {100 * acc:>10.2f} {s:>8.1f}")
    if len(rows) == 2:
        print(f"accuracy difference (ours - sklearn): {100 * (rows[0][2] - rows[1][2]):+.2f} points; "
              f"speed-up {rows[1][3] / rows[0][3]:.1f}x")


if __name__ == "__main__":
    main()
