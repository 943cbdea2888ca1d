"""What tests/test_distributed.py runs under ``torchrun``: the trainer, unchanged, on each rank.

``python ddp_entry.py DATA OUT RESULT_PREFIX RUNS`` trains each run named in ``RUNS`` (comma-separated
keys of :data:`RUNS`, or ``resume:<key>:<epochs>`` to continue an earlier run of the list) on the image
folder DATA with run directories under OUT, and writes what this rank saw to
``RESULT_PREFIX.<rank>.json``. Rank 1 starts a little later, so a run name built from a
timestamp would differ between the ranks unless rank 0's name is shared.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)

import zoo_core  # noqa: E402 - after the thread setting

COMMON: dict[str, Any] = {"weights": None, "image_size": 32, "batch_size": 8, "seed": 0, "device": "cpu",
                          "precision": "fp32", "num_workers": 0, "progress": False, "val_fraction": 0.25}
RUNS: dict[str, dict[str, Any]] = {
    # LayerNorm only: DDP over 2 × 4 images is the single-process step on 8 (up to float summation order)
    "finetune_vit": {"backbone": "timm/test_vit", "strategy": "finetune", "trainable_stages": 1, "augment": False,
                     "epochs": 2, "lr": 3e-3, "early_stopping": None},
    # BatchNorm in the trained stage (layer4): per-rank batch statistics over 4 images instead of 8
    "finetune_resnet": {"backbone": "resnet18", "strategy": "finetune", "trainable_stages": 1, "augment": False,
                        "epochs": 2, "lr": 3e-3, "early_stopping": None},
    # head only for one epoch, then every layer: the model is wrapped in DDP again at the phase change
    "gradual_vit": {"backbone": "timm/test_vit", "strategy": "gradual", "head_epochs": 1, "augment": False,
                    "epochs": 2, "lr": 3e-3, "early_stopping": None},
    # frozen backbone, features extracted in shards, converged head fit
    "features": {"backbone": "resnet18", "strategy": "feature-extraction"},
}


def run(name: str, data: str, out: str) -> dict[str, Any]:
    """Train run ``name`` and return what the caller compares."""
    cfg = dict(COMMON, **RUNS[name])
    backbone = cfg.pop("backbone")
    return _record(zoo_core.train(backbone, data, out_dir=out, **cfg))


def _record(result: Any) -> dict[str, Any]:
    return {"run_dir": str(result.run_dir), "history": result.history, "metrics": result.metrics,
            "best_epoch": result.best_epoch, "config": {k: result.config.get(k) for k in
                                                        ("world_size", "batch_size_per_rank", "feature_cache_hit")}}


def resume(run_dir: str, epochs: int) -> dict[str, Any]:
    """Continue ``run_dir`` from its ``last.pt`` up to ``epochs`` epochs."""
    return _record(zoo_core.train(resume=run_dir, epochs=epochs, progress=False))


def main(argv: list[str]) -> int:
    """Entry point (see the module docstring)."""
    data, out, prefix, names = argv[0], argv[1], argv[2], argv[3].split(",")
    rank = int(os.environ.get("RANK", "0"))
    record: dict[str, Any] = {"rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    for name in names:
        if name.startswith("resume:"):  # resume:<run>:<epochs> continues that run's directory
            _, of, epochs = name.split(":")
            record[name] = resume(record[of]["run_dir"], int(epochs))
            continue
        if rank == 1 and name == names[0]:
            time.sleep(1.1)  # a different wall-clock second than rank 0's
        record[name] = run(name, data, out)
    Path(f"{prefix}.{rank}.json").write_text(json.dumps(record, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
