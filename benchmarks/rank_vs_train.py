"""Does ``rank`` order backbones as training does, and how much faster is it?

    .venv/bin/python benchmarks/rank_vs_train.py               # demo shapes, 720 images, 8 backbones, budget 96
    .venv/bin/python benchmarks/rank_vs_train.py --full        # also rank on the whole training split

On one dataset, N backbones are scored by :func:`zoo_core.rank` (LogME and the 5-fold converged linear
probe on frozen training-split features) and trained by :func:`zoo_core.compare` with feature extraction
(the converged linear head, top-1 on the validation split). Printed: each backbone's scores and top-1,
Kendall's tau and Spearman's rho of each score against the trained top-1, and the ratio compare / rank of
wall time and of this process's CPU time (the steadier one on a shared machine) — for a ranking on a
``--budget`` subsample and, with ``--full``, on the whole training split. Every call starts from its own
empty feature and pixel cache, so none reuses another's features (a ``compare`` after a full-split
``rank`` would read the training features back); the pretrained weights are loaded once before any clock
starts.

**The data**: the built-in demo dataset (:mod:`zoo_core.data.demo`): six shape classes on cluttered,
textured backgrounds, where colour and texture carry no information — so how well the features encode
shape decides the accuracy, and ImageNet features beat random ones by a wide margin. It is drawn in
code: no download.

**The backbones**: every one is offline. Real ImageNet weights exist offline only for EfficientNet-Lite0/1/2
(``plugins/effnet_lite``), and three near-equal networks alone give a correlation of noise; a random-init
network alone gives a trivial one. So a small in-process plugin (``bench/…``) adds variants whose transfer
quality differs for known reasons, each with the real weights: the three networks at 112 px, Lite0 at 64 px
and 96 px (less resolution), Lite0 cut after its 5th and its 3rd block stage (features from earlier, less
semantic layers, pooled where the head would read them), and Lite0 from random init (``RANDOM INIT``: the
floor). The trained top-1 of these spans chance to the best, with several close pairs in between, which is
what a useful ranking has to get right.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import _common  # noqa: E402  (the repository on sys.path)
import torch
from torch import nn

import zoo_core  # noqa: E402
from zoo_core import WeightsError, hookimpl  # noqa: E402
from zoo_core.backbones.adapter import DataConfig  # noqa: E402
from zoo_core.data.demo import make_demo_dataset  # noqa: E402
from zoo_core.stats import kendall_tau, spearman_rho  # noqa: E402

try:
    from zoo_effnet_lite import EfficientNetLiteAdapter
except ImportError:  # pragma: no cover - the plugin is part of every install (make install)
    sys.exit("benchmarks/rank_vs_train.py needs the effnet_lite plugin: pip install -e plugins/effnet_lite")

VARIANTS: dict[str, tuple[str, int, int | None, bool]] = {  # name → (network, input px, block stages kept, pretrained)
    "bench/lite0@112": ("efficientnet_lite0", 112, None, True),
    "bench/lite1@112": ("efficientnet_lite1", 112, None, True),
    "bench/lite2@112": ("efficientnet_lite2", 112, None, True),
    "bench/lite0@96": ("efficientnet_lite0", 96, None, True),
    "bench/lite0@64": ("efficientnet_lite0", 64, None, True),
    "bench/lite0-cut5@112": ("efficientnet_lite0", 112, 5, True),
    "bench/lite0-cut3@112": ("efficientnet_lite0", 112, 3, True),
    "bench/lite0-random@112": ("efficientnet_lite0", 112, None, False),
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


def timed(label: str, cache: Path, fn: Callable[[], Any]) -> tuple[Any, tuple[float, float]]:
    """``fn()`` with an empty feature/pixel cache of its own; its (wall, CPU) seconds. The CPU time of this
    process (all its threads) is the steadier measure on a machine shared with other jobs."""
    os.environ["BACKBONE_ZOO_CACHE"] = str(cache)
    print(f"running {label} …", file=sys.stderr, flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return result, (time.perf_counter() - t0, time.process_time() - c0)


def correlations(entries: list[Any], top1: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Kendall tau and Spearman rho of each rank score against the trained top-1, over the ranked backbones."""
    ok = [e for e in entries if e.ok and e.backbone in top1]
    truth = [top1[e.backbone] for e in ok]
    return {s: (kendall_tau([getattr(e, a) for e in ok], truth), spearman_rho([getattr(e, a) for e in ok], truth))
            for s, a in (("LogME", "logme"), ("probe", "probe_acc"))}


def report(rankings: dict[str, tuple[Any, tuple[float, float]]], board: Any, t_compare: tuple[float, float]) -> None:
    """Per backbone its scores in each ranking and its trained top-1; then the correlations and time ratios."""
    top1 = {e.backbone: e.val_acc for e in board.entries if e.status == "ok"}
    first = next(iter(rankings.values()))[0]
    by = {label: {e.backbone: e for e in rk.entries} for label, (rk, _) in rankings.items()}
    head = f"{'backbone':24} {'weights':12} {'top-1':>7}" + "".join(
        f" {'LogME ' + label:>14} {'probe ' + label:>12}" for label in rankings)
    print(head + "\n" + "-" * len(head))
    for e in first.entries:
        cells = "".join(f" {by[label][e.backbone].logme or float('nan'):14.4f} "
                        f"{by[label][e.backbone].probe_acc or float('nan'):12.4f}" for label in rankings)
        print(f"{e.backbone:24} {e.weights:12} {top1.get(e.backbone, float('nan')):7.4f}{cells}")
    print(f"\ncompare (feature extraction, {len(board.entries)} entries): {t_compare[0]:.1f}s wall, "
          f"{t_compare[1]:.1f}s CPU")
    for label, (rk, (wall, cpu)) in rankings.items():
        print(f"rank {label} ({rk.summary}): {wall:.1f}s wall, {cpu:.1f}s CPU; compare / rank = "
              f"{t_compare[0] / wall:.2f} (wall), {t_compare[1] / cpu:.2f} (CPU)")
        for score, (tau, rho) in correlations(rk.entries, top1).items():
            print(f"    {score:5} vs trained top-1: Kendall tau {tau:+.3f}, Spearman rho {rho:+.3f}")


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--per-class", type=int, default=120, help="demo images per class (6 classes; default 120)")
    ap.add_argument("--budget", type=int, default=96, help="training images ranked (default 96; 0: skip)")
    ap.add_argument("--full", action="store_true", help="also rank on the whole training split (slower)")
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
    board, t_compare = timed("compare (feature extraction)", work / "cache-compare", lambda: zoo_core.compare(
        names, data, out_dir=work / "compare", **common))
    plan = [(f"budget {args.budget}", args.budget)] if args.budget else []
    plan += [("full split", None)] if args.full else []
    rankings = {}
    for label, budget in plan:
        rankings[label] = timed(f"rank ({label})", work / f"cache-rank-{budget or 'full'}", lambda b=budget: zoo_core.rank(
            names, data, out_dir=work / f"rank-{b or 'full'}", budget=b, folds=args.folds, **common))
    if not rankings:
        sys.exit("nothing to rank: give --budget N and/or --full")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; data: {data} ({args.per_class} images per "
          "class, 6 classes); top-1: compare's feature-extraction runs on the validation split\n")
    report(rankings, board, t_compare)
    print(f"\noutputs under {work}")


if __name__ == "__main__":
    main()
