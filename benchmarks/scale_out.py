"""The same compare serial and through Ray (``executor="ray"``): wall times, their ratio, Ray's own overhead.

    .venv/bin/python benchmarks/scale_out.py [--entries 4] [--per-class 40] [--image-size 64] [--epochs 2]
        [--strategy finetune] [--out r.json]

Entries are ``timm/resnet18.*`` tags from random init (``weights=None``): the same network under different
names, so every entry costs the same. On a machine with >= 2 CUDA GPUs it runs as many entries as GPUs and
compares their wall time through Ray (1 GPU per entry) with one entry alone (target: <= 1.15x). Otherwise
(CPU) it runs the same ``--entries`` compare serial and through a fresh local Ray instance (1 core per
entry) and prints

* the ratio of the two wall times (with 2 cores and 1 core per entry, entries run two at a time);
* Ray's own overhead: starting the instance, the checks of every node, starting the workers (importing
  torch) and gathering — the Ray compare's wall time outside the span in which its tasks ran — as a share
  of its wall time (target: <= 15 %);
* whether the leaderboards agree (top-1 and validation loss of every entry).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

GPU_TARGET, OVERHEAD_TARGET = 1.15, 0.15


def _backbones(n: int) -> list[str]:
    import zoo_core

    names = zoo_core.list_backbones("timm/resnet18.*")
    if len(names) < n:
        raise SystemExit(f"scale_out: need {n} timm/resnet18.* tags, found {len(names)} (is zoo-timm installed?)")
    return names[:n]


def _compare(backbones: list[str], data: Path, out: Path, args: argparse.Namespace, executor: Any) -> tuple[float, Any]:
    import zoo_core

    t0 = time.perf_counter()
    board = zoo_core.compare(backbones, data, strategies=[args.strategy], out_dir=out, weights=None,
                             image_size=args.image_size, epochs=args.epochs, progress=False, executor=executor)
    return time.perf_counter() - t0, board


def _numbers(board: Any) -> list[tuple[Any, ...]]:
    return sorted((e.backbone, e.status, e.val_acc, e.val_loss) for e in board.entries)


def _overhead(ex: Any, wall: float) -> float:
    """Seconds of the Ray compare spent outside the span in which its entries ran."""
    spans = ex.stats["spans"]
    busy = max(end for _, end in spans) - min(start for start, _ in spans)
    return ex.stats["init_s"] + ex.stats["prepare_s"] + ex.stats["map_s"] - busy


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--entries", type=int, default=4, help="entries on the CPU (default 4)")
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--strategy", default="finetune")
    p.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = p.parse_args()

    import torch

    gpus = torch.cuda.device_count()
    work = Path(tempfile.mkdtemp(prefix="zoo-scale-out-"))
    try:
        return _run(args, gpus, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, gpus: int, work: Path) -> int:
    """Both measurements in ``work`` (deleted afterwards)."""
    from zoo_core.data.demo import make_demo_dataset
    from zoo_core.scaleout import RayExecutor

    os.environ["BACKBONE_ZOO_CACHE"] = str(work / "cache")
    data = make_demo_dataset(work / "data", per_class=args.per_class, size=max(args.image_size, 64))
    report: dict[str, Any] = {"gpus": gpus, "cpus": os.cpu_count()}
    if gpus >= 2:
        names = _backbones(gpus)
        one, _ = _compare(names[:1], data, work / "one", args, "local")
        ex = RayExecutor(gpus_per_entry=1, progress=False)
        with ex:
            many, _ = _compare(names, data, work / "ray", args, ex)
        ratio = many / one
        report.update(entries=gpus, one_entry_s=round(one, 2), ray_n_entries_s=round(many, 2), ratio=round(ratio, 3))
        print(f"scale_out: {gpus} entries on {gpus} GPUs through Ray {many:.1f}s, one entry alone {one:.1f}s: "
              f"{ratio:.2f}x (target <= {GPU_TARGET}x: {'PASS' if ratio <= GPU_TARGET else 'MISS'})")
    else:
        names = _backbones(args.entries)
        serial, board_s = _compare(names, data, work / "serial", args, "local")
        from zoo_core.cache import clear_cache

        clear_cache("all")
        ex = RayExecutor(cpus_per_entry=1, gpus_per_entry=0, progress=False)
        with ex:
            par, board_r = _compare(names, data, work / "ray", args, ex)
        over = _overhead(ex, par)
        same = _numbers(board_s) == _numbers(board_r)
        report.update(entries=len(names), serial_s=round(serial, 2), ray_s=round(par, 2), ratio=round(par / serial, 3),
                      ray_init_s=round(ex.stats["init_s"], 2), ray_overhead_s=round(over, 2),
                      overhead_share=round(over / par, 3), same_leaderboard=same)
        print(f"scale_out: {len(names)} entries ({args.strategy}, {args.image_size} px, {args.epochs} epochs) on "
              f"{os.cpu_count()} CPUs: serial {serial:.1f}s, Ray {par:.1f}s ({par / serial:.2f}x serial); Ray's own "
              f"overhead {over:.1f}s = {100 * over / par:.1f}% of its wall time (start {ex.stats['init_s']:.1f}s; "
              f"target <= {100 * OVERHEAD_TARGET:.0f}%: {'PASS' if over / par <= OVERHEAD_TARGET else 'MISS'}); "
              f"same leaderboard: {same}")
        print("scale_out: no 2+ GPU machine here; on one, this script runs N entries on N GPUs against one entry")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
