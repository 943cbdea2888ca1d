"""Fine-tuning defaults side by side on the same data — feature extraction, a fine-tune from a random head,
and LP-FT (the default) — with real ImageNet weights, each variant in its own child process and its own
empty feature cache (so every wall time includes every backbone pass it needs).

    .venv/bin/python benchmarks/finetune_defaults.py [--data digits|demo|PATH ...] [--backbone efficientnet_lite0]
        [--image-size 128] [--strategy finetune] [--out results.json]

Variants (``zoo_core.train`` with only these options changed):

* **feature extraction** — ``strategy="feature-extraction"``: frozen backbone, converged head fit.
* **old fine-tune** — fine-tuning without the probe: a random head, RandomResizedCrop + flip
  unchecked (``augment=True``), ``head_init="random"`` (so BatchNorm statistics update), 5 epochs, patience 5.
* **LP-FT (default)** — ``--strategy finetune`` with every default: the converged linear probe as the head,
  each augmentation checked on the data, BatchNorm statistics kept, a 5-epoch budget that grows while the
  validation loss falls, early stopping from the run's own best epoch.
* **full (LP-FT)** — ``--strategy full`` with every default (every stage trains).
* **auto** — ``--strategy auto``: LP-FT trials on a subsample choose the stages (last, last half, all, first,
  Auto-RGN); the row lists the choice and every trial's top-1 (the surgical variants, on the trial subsample).

Data: ``digits`` — scikit-learn's 1,797 handwritten 8×8 digits (scaled to 64 px PNGs, 10 classes, 25 %
validation): far from ImageNet, the domain-shifted case. ``demo`` — the built-in demo set (generated textured
shapes in clutter, 6 classes, 480 images, 20 % validation): closer to ImageNet-style photos. Any image folder
works too. Prints one table per dataset, the targets with PASS/MISS, and ``--out`` JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: E402  (the repository on sys.path)

VARIANTS: dict[str, dict[str, Any]] = {
    "feature extraction": {"strategy": "feature-extraction"},
    "old fine-tune": {"head_init": "random", "augment": True, "epochs": 5, "early_stopping": 5},
    "LP-FT (default)": {},
    "full (LP-FT)": {"strategy": "full"},
    "auto": {"strategy": "auto"},
}
DOMAIN_SHIFTED = {"digits"}  # datasets held to "LP-FT >= feature extraction + 1 point"


def dataset(name: str, work: Path) -> tuple[Path, float]:
    """(folder, validation fraction) of a dataset name or folder."""
    if name == "digits":
        return _common.digits_folder(work / "digits"), 0.25
    if name == "demo":
        from zoo_core.data.demo import make_demo_dataset
        from zoo_core.demo import DEMO_DATA

        return make_demo_dataset(work / "demo", per_class=DEMO_DATA["per_class"], size=DEMO_DATA["size"]), 0.2
    return Path(name), 0.2


def child(args: argparse.Namespace) -> None:
    """One variant, in this (child) process: print its result as JSON on the last line."""
    import zoo_core

    kw = {"strategy": args.strategy, **json.loads(args.child)}
    t0 = time.perf_counter()
    r = zoo_core.train(args.backbone, args.data[0], image_size=args.image_size, val_fraction=args.val_fraction,
                       out_dir=args.runs, progress=False, seed=args.seed, **kw)
    wall = time.perf_counter() - t0
    rec = json.loads((r.run_dir / "config.json").read_text())
    print(json.dumps({"val_acc": r.metrics["val_acc"], "val_loss": r.metrics["val_loss"], "wall_s": wall,
                      "epochs_run": len(r.history) if rec.get("epochs") else 0, "best_epoch": r.best_epoch,
                      "augment": rec.get("augment"), "probe_acc": (rec.get("probe") or {}).get("row", {}).get("val_acc"),
                      "history": [h["val_acc"] for h in r.history], "surgical": rec.get("surgical")}))


def run_variant(name: str, data: Path, val_fraction: float, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    env = {**os.environ, "BACKBONE_ZOO_CACHE": tempfile.mkdtemp(dir=work, prefix="cache-")}
    cmd = [sys.executable, __file__, "--child", json.dumps(VARIANTS[name]), "--data", str(data),
           "--val-fraction", str(val_fraction), "--backbone", args.backbone, "--image-size", str(args.image_size),
           "--strategy", args.strategy, "--runs", str(work / "runs"), "--seed", str(args.seed)]
    print(f"  {name} …", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    return {"variant": name, **json.loads(out.stdout.strip().splitlines()[-1])}


def table(rows: list[dict[str, Any]]) -> str:
    old = next((r for r in rows if r["variant"] == "old fine-tune"), None)
    lines = [f"{'variant':20} {'val top-1':>9} {'wall s':>7} {'vs old FT':>9} {'epochs':>6} {'best':>4}  augmentation"]
    for r in rows:
        aug = "n/a" if r["variant"] == "feature extraction" else ", ".join(r["augment"]) or "none"
        vs = f"{r['wall_s'] / old['wall_s']:.2f}x" if old else "-"
        lines.append(f"{r['variant']:20} {100 * r['val_acc']:8.2f}% {r['wall_s']:7.1f} {vs:>9} "
                     f"{r['epochs_run']:6d} {r['best_epoch']:4d}  {aug}")
        if r.get("surgical"):
            trials = ", ".join(f"{t['name']} {100 * t['val_acc']:.1f}%" for t in r["surgical"]["trials"])
            lines.append(f"{'':20} chose {r['surgical']['chosen']['name']}; trials (subsample): {trials}")
    return "\n".join(lines)


def verdicts(name: str, rows: list[dict[str, Any]]) -> list[str]:
    """The targets with PASS/MISS, each where the variants it compares ran."""
    by = {r["variant"]: r for r in rows}
    fe, old, lp = by.get("feature extraction"), by.get("old fine-tune"), by.get("LP-FT (default)")
    auto, full = by.get("auto"), by.get("full (LP-FT)")
    out = []
    if fe and lp:
        gap, need = 100 * (lp["val_acc"] - fe["val_acc"]), 1.0 if name in DOMAIN_SHIFTED else -0.5
        out.append(f"{'PASS' if gap >= need else 'MISS'}  LP-FT - feature extraction = {gap:+.2f} points (target >= "
                   f"{need:+.1f}: {'domain-shifted' if name in DOMAIN_SHIFTED else 'in-domain'})")
    if lp and old:
        ratio = lp["wall_s"] / old["wall_s"]
        out.append(f"{'PASS' if ratio <= 1.3 else 'MISS'}  LP-FT wall time = {ratio:.2f}x the old fine-tune (target <= 1.3x)")
    if auto and fe and lp and full:
        best = max(fe["val_acc"], lp["val_acc"], full["val_acc"])
        lead, over_fe = 100 * (auto["val_acc"] - best), 100 * (auto["val_acc"] - fe["val_acc"])
        floor = 1.0 if 100 * (best - fe["val_acc"]) >= 1 else -0.3  # +1 where fine-tuning reaches it
        out += [f"{'PASS' if lead >= -0.3 else 'MISS'}  auto - best of (feature extraction, finetune, full) = "
                f"{lead:+.2f} points (target >= -0.3)",
                f"{'PASS' if over_fe >= floor else 'MISS'}  auto - feature extraction = {over_fe:+.2f} points "
                f"(target >= {floor:+.1f})"]
    if auto and full:
        out.append(f"{'PASS' if auto['wall_s'] <= 2 * full['wall_s'] else 'MISS'}  auto wall time = "
                   f"{auto['wall_s'] / full['wall_s']:.2f}x full (target <= 2x)")
    return out


def main() -> None:
    p = _common.parser(__doc__, seed=0)
    p.add_argument("--data", nargs="+", default=["digits", "demo"])
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--strategy", default="finetune")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="VARIANT",
                   help=f"which rows to run (default: all of {', '.join(VARIANTS)})")
    _common.add_out(p)
    p.add_argument("--work", type=Path, help="folder for data, caches and runs (default: a temporary one)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--val-fraction", type=float, default=0.2, help=argparse.SUPPRESS)
    p.add_argument("--runs", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        return child(args)
    work = args.work or Path(tempfile.mkdtemp(prefix="finetune-defaults-"))
    results = {}
    for name in args.data:
        folder, vf = dataset(name, work)
        print(f"{name}: {args.backbone} at {args.image_size} px, --strategy {args.strategy}", file=sys.stderr)
        rows = []
        for v in args.variants:
            rows.append(run_variant(v, folder, vf, args, work))
            print(f"  {v}: top-1 {100 * rows[-1]['val_acc']:.2f}%, {rows[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
        results[name] = rows
        print(f"\n== {name} ({folder})\n{table(rows)}")
        print("\n".join(verdicts(name, rows)), flush=True)
    if args.out:
        _common.write_json(args.out, results)


if __name__ == "__main__":
    main()
