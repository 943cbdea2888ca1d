"""Issue 14 benchmark: does ``rank`` order backbones as training does, and how much faster is it?

    .venv/bin/python benchmarks/rank_vs_train.py                    # demo shapes, 480 images, 8 backbones
    .venv/bin/python benchmarks/rank_vs_train.py --per-class 40 --budget 64

On one dataset, N backbones are scored by :func:`zoo_core.rank` (LogME and the 5-fold converged linear
probe on frozen training-split features) and trained by :func:`zoo_core.compare` with feature extraction
(the converged linear head, top-1 on the validation split). Printed: each backbone's scores and top-1,
Kendall's tau and Spearman's rho of each score against the trained top-1, and the wall-time ratio
compare / rank — for a full-split ranking and for one on a ``--budget`` subsample. Each of the three calls
starts from its own empty feature and pixel cache, so none reuses another's features (a ``compare`` after
a full-split ``rank`` would read the training features back); the pretrained weights are loaded once
before any clock starts.

**The data**: the built-in demo dataset (:mod:`zoo_core.demo_data`): six shape classes on cluttered,
textured backgrounds, where colour and texture carry no information — so how well the features encode
shape decides the accuracy, and ImageNet features beat random ones by a wide margin. It is drawn in
code: no download.

**The backbones**: every one is offline. Real ImageNet weights exist offline only for EfficientNet-Lite0/1/2
(``plugins/effnet_lite``), and three near-equal networks alone give a correlation of noise; a random-init
network alone gives a trivial one. So a small in-process plugin (``bench/…``) adds variants whose transfer
quality differs for known reasons, each with the real weights: the three networks at 128 px, Lite0 at 64 px
and 96 px (less resolution), Lite0 cut after its 5th and its 3rd block stage (features from earlier, less
semantic layers, pooled where the head would read them), and Lite0 from random init (``RANDOM INIT``: the
floor). The trained top-1 of these spans chance to the best, with several close pairs in between, which is
what a useful ranking has to get right.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import zoo_core  # noqa: E402
from zoo_core import WeightsError, hookimpl  # noqa: E402
from zoo_core.adapter import DataConfig  # noqa: E402
from zoo_core.demo_data import make_demo_dataset  # noqa: E402
from zoo_core.stats import kendall_tau, spearman_rho  # noqa: E402

try:
    from zoo_effnet_lite import EfficientNetLiteAdapter
except ImportError:  # pragma: no cover - the plugin is part of every install (make install)
    sys.exit("benchmarks/rank_vs_train.py needs the effnet_lite plugin: pip install -e plugins/effnet_lite")

VARIANTS: dict[str, tuple[str, int, int | None, bool]] = {  # name → (network, input px, block stages kept, pretrained)
    "bench/lite0@128": ("efficientnet_lite0", 128, None, True),
    "bench/lite1@128": ("efficientnet_lite1", 128, None, True),
    "bench/lite2@128": ("efficientnet_lite2", 128, None, True),
    "bench/lite0@96": ("efficientnet_lite0", 96, None, True),
    "bench/lite0@64": ("efficientnet_lite0", 64, None, True),
    "bench/lite0-cut5@128": ("efficientnet_lite0", 128, 5, True),
    "bench/lite0-cut3@128": ("efficientnet_lite0", 128, 3, True),
    "bench/lite0-random@128": ("efficientnet_lite0", 128, None, False),
}


def cut(model: nn.Module, stages: int, num_classes: int) -> nn.Module:
    """Keep the first ``stages`` block stages of a timm EfficientNet; the head reads their pooled output."""
    model.blocks = model.blocks[:stages]
    model.conv_head, model.bn2 = nn.Identity(), nn.Identity()
    with torch.no_grad():
        model.num_features = model.head_hidden_size = int(model.forward_features(torch.zeros(1, 3, 64, 64)).shape[1])
    model.reset_classifier(num_classes)
    return model


class Variants(EfficientNetLiteAdapter):
    """The benchmark's backbones: EfficientNet-Lite networks at other input sizes, cut short, or random."""

    family = "bench"

    def names(self) -> list[str]:
        return list(VARIANTS)

    def create(self, name: str, *, weights: str | None = None, num_classes: int | None = 1000) -> nn.Module:
        network, _, stages, pretrained = VARIANTS[name]
        if weights is not None and not pretrained:  # compare/rank(fallback_random=True) then mark RANDOM INIT
            raise WeightsError(f"{name} is the random-init variant of this benchmark: it has no pretrained weights")
        model = super().create(network, weights=weights, num_classes=num_classes)
        return cut(model, stages, num_classes or 1000) if stages else model

    def data_config(self, name: str, weights: str | None = "DEFAULT") -> DataConfig:
        if name not in VARIANTS:  # the network's own (the weights check of ``create`` asks for it)
            return super().data_config(name, weights)
        network, size, _, _ = VARIANTS[name]
        return super().data_config(network).with_image_size(size)

    def available_weights(self, name: str) -> list[str]:
        return ["in1k"] if VARIANTS[name][3] else []

    def describe(self, name: str) -> dict[str, Any]:
        return {}


class VariantsPlugin:
    @hookimpl
    def register_backbones(self, register: Callable[..., None]) -> None:
        register(Variants())


def timed(label: str, cache: Path, fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` with an empty feature/pixel cache of its own; its wall time."""
    os.environ["BACKBONE_ZOO_CACHE"] = str(cache)
    print(f"running {label} …", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def correlations(entries: list[Any], top1: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Kendall tau and Spearman rho of each rank score against the trained top-1, over the ranked backbones."""
    ok = [e for e in entries if e.ok and e.backbone in top1]
    truth = [top1[e.backbone] for e in ok]
    return {s: (kendall_tau([getattr(e, a) for e in ok], truth), spearman_rho([getattr(e, a) for e in ok], truth))
            for s, a in (("LogME", "logme"), ("probe", "probe_acc"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=80, help="demo images per class (6 classes; default 80)")
    ap.add_argument("--budget", type=int, default=64, help="training images of the budget ranking (default 64)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--work", default=None, help="folder for data, caches and outputs (default: a temp dir)")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="rank-vs-train-"))
    data = make_demo_dataset(work / "data", per_class=args.per_class, progress=False)
    zoo_core.register_plugin(VariantsPlugin(), name="bench")
    names = list(VARIANTS)
    for network in dict.fromkeys(v[0] for v in VARIANTS.values()):  # load + verify the real weights once
        zoo_core.create(network, num_classes=6)
    common = {"fallback_random": True, "progress": False}
    ranking, t_rank = timed("rank (full training split)", work / "cache-rank", lambda: zoo_core.rank(
        names, data, out_dir=work / "rank", folds=args.folds, **common))
    board, t_compare = timed("compare (feature extraction)", work / "cache-compare", lambda: zoo_core.compare(
        names, data, out_dir=work / "compare", **common))
    budget, t_budget = timed(f"rank --budget {args.budget}", work / "cache-budget", lambda: zoo_core.rank(
        names, data, out_dir=work / "rank-budget", budget=args.budget, folds=args.folds, **common))

    top1 = {e.backbone: e.val_acc for e in board.entries if e.status == "ok"}
    small = {e.backbone: e for e in budget.entries}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; data: {ranking.data}, {ranking.summary}; "
          "top-1: compare's feature-extraction runs on the validation split\n")
    head = f"{'backbone':24} {'weights':12} {'LogME':>8} {'probe':>7} {'top-1':>7}   {'LogME@B':>8} {'probe@B':>7}"
    print(head + "\n" + "-" * len(head))
    for e in ranking.entries:
        b = small.get(e.backbone)
        print(f"{e.backbone:24} {e.weights:12} {e.logme or float('nan'):8.4f} {e.probe_acc or float('nan'):7.4f} "
              f"{top1.get(e.backbone, float('nan')):7.4f}   {b.logme if b and b.ok else float('nan'):8.4f} "
              f"{b.probe_acc if b and b.ok else float('nan'):7.4f}")
    print()
    for label, rk, seconds in ((f"full split ({ranking.entries[0].images} images)", ranking, t_rank),
                               (f"budget {args.budget} ({budget.entries[0].images} images)", budget, t_budget)):
        corr = correlations(rk.entries, top1)
        print(f"rank on the {label}: {seconds:.1f}s; compare {t_compare:.1f}s; compare / rank = "
              f"{t_compare / seconds:.2f}")
        for score, (tau, rho) in corr.items():
            print(f"    {score:5} vs trained top-1: Kendall tau {tau:+.3f}, Spearman rho {rho:+.3f}")
    print(f"\noutputs under {work}")


if __name__ == "__main__":
    main()
