"""``zoo demo`` / ``make demo``: the newcomer's first run, offline, in a few minutes on a laptop CPU.

Generates the built-in demo dataset (textured shapes, :mod:`zoo_core.demo_data`) and compares one
backbone from each built-in plugin with feature extraction and fine-tuning. Pretrained weights are used
when they are cached or downloadable; otherwise the entry runs from random init and says so plainly.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from .comparison import Leaderboard, compare
from .demo_data import make_demo_dataset
from .registry import list_backbones

DEMO_BACKBONES = {  # plugin → backbone it contributes to the demo (small and fast on a CPU)
    "resnet": "resnet18",
    "vgg": "vgg11",
    "timm": "timm/mobilenetv3_small_100.lamb_in1k",
}
DEMO_STRATEGIES = ("feature-extraction", "finetune")
DEMO_SETTINGS = {"image_size": 64, "epochs_finetune": 3, "batch_size": 32}


def _online(host: str, timeout: float = 2.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def run_demo(out: str | os.PathLike = "demo-output", *, rerun: bool = False, per_class: int = 40) -> Leaderboard:
    """Generate the demo data under ``out/data`` and write a leaderboard into ``out``."""
    out = Path(out)
    t0 = time.perf_counter()
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    data = make_demo_dataset(out / "data", per_class=per_class, size=112, seed=0)
    say(f"zoo demo: demo dataset ready in {data} ({per_class} images per class)")
    if not _online("huggingface.co") and "HF_HUB_OFFLINE" not in os.environ:
        os.environ["HF_HUB_OFFLINE"] = "1"  # use the Hugging Face cache only, no slow retries
        say("zoo demo: no network — pretrained weights come from the local caches only")
    available = set(list_backbones())
    backbones = [b for b in DEMO_BACKBONES.values() if b in available]
    missing = [p for p, b in DEMO_BACKBONES.items() if b not in available]
    if missing:
        say(f"zoo demo: plugin(s) {', '.join(missing)} not installed; comparing {', '.join(backbones)}")
    board = None
    for strategy in DEMO_STRATEGIES:  # feature extraction converges on its own; fine-tuning gets 3 epochs
        epochs = None if strategy == "feature-extraction" else DEMO_SETTINGS["epochs_finetune"]
        board = compare(backbones, data, strategies=[strategy], out_dir=out, fallback_random=True, rerun=rerun,
                        image_size=DEMO_SETTINGS["image_size"], batch_size=DEMO_SETTINGS["batch_size"],
                        epochs=epochs, early_stopping=None, merge=True)
    assert board is not None
    random_entries = [e.label for e in board.entries if e.weights == "RANDOM INIT"]
    say(f"\nzoo demo: finished in {time.perf_counter() - t0:.0f}s. Leaderboard: {out / 'leaderboard.md'}; "
        f"plots: {out / 'accuracy_vs_speed.png'}, {out / 'learning_curves.png'}")
    if random_entries:
        say("zoo demo: NOTE — these entries ran from RANDOM INIT because no pretrained weights were cached or "
            f"downloadable: {', '.join(random_entries)}. With network access (or the files in $TORCH_HOME / "
            "the Hugging Face cache) they use ImageNet weights.")
    return board
