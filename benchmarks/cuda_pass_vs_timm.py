"""Our extraction pass vs timm's own ``benchmark.py``-style inference, same model, batch and precision, on CUDA.

    .venv/bin/python benchmarks/cuda_pass_vs_timm.py [--model timm/resnet50] [--batch-size 256]
        [--precision auto|fp32|bf16|fp16] [--warmup 10] [--iters 40] [--repeats 3] [--image-size N] [--out r.json]
    .venv/bin/python benchmarks/cuda_pass_vs_timm.py --cpu --model timm/test_efficientnet --batch-size 2 \\
        --iters 2 --warmup 1 --repeats 1 --image-size 64          # dry run of the same code on the CPU

Three rows, measured in one process, interleaved, best of ``--repeats``:

* **timm benchmark.py** — what timm's ``InferenceBenchmarkRunner`` does: ``timm.create_model(name)``
  moved to the device in channels-last, ``model.eval()``, a random ``[B, 3, H, W]`` channels-last input
  already on the device, ``torch.no_grad()`` + autocast to the precision (none for fp32),
  ``torch.backends.cudnn.benchmark = True`` (timm's script sets it), ``--warmup`` steps, then
  ``--iters`` steps timed between two ``torch.cuda.synchronize()``; img/s = B × iters / seconds.
* **ours: the pass** — the :class:`zoo_core.cache.ForwardPass` that extraction picks for the same model
  (``zoo_core.create(model, weights=None)`` with timm's weights copied in; ``candidate_passes`` +
  ``choose_pass`` on the first batch, so ``auto`` may fall back after its check against fp32), inside
  ``inference_setup`` (eval, channels-last), on the same device-resident input, normalised as the
  extraction normalises it, timed the same way. cudnn.benchmark is left as the library leaves it.
* **ours: extract_features** — the whole extraction loop over ``B × iters`` pre-decoded uint8 images in
  a :class:`zoo_core.cache.PixelCache` (what ``compare`` feeds it): the pass check, host-to-device
  copies, normalisation, the pass and the device-to-host copy of the features into memory.

The target: the pass at >= 50 % of timm's img/s (PASS/MISS). Both use the same input size (the zoo data
config's, or ``--image-size``; timm's script would use the model's test size). Without a CUDA GPU it exits
with a one-line message; ``--cpu`` runs the same code on the CPU (tiny sizes: a dry run, not a measurement).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import _common  # noqa: E402  (the repository on sys.path)

TARGET = 0.5  # ours' pass at least this fraction of timm's img/s
_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def timed(fn: Callable[[], Any], sync: Callable[[], None], warmup: int, iters: int, batch: int) -> float:
    """img/s of ``iters`` calls of ``fn`` after ``warmup`` calls, synchronised as timm's benchmark.py does."""
    for _ in range(warmup):
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return batch * iters / (time.perf_counter() - t)


def autocast(device: Any, precision: str) -> contextlib.AbstractContextManager:
    """timm's ``amp_autocast`` for a resolved precision (nothing for fp32)."""
    import torch

    if precision in _DTYPES:
        return torch.autocast(device.type, dtype=getattr(torch, _DTYPES[precision]))
    return contextlib.nullcontext()


class RandomPixels:
    """``n`` random uint8 images ``[3, S, S]`` (S = the eval resize size, so the transforms only crop)."""

    def __init__(self, n: int, side: int, seed: int = 0) -> None:
        self.n, self.side, self.seed = n, side, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return torch.randint(0, 256, (3, self.side, self.side), dtype=torch.uint8, generator=g), i % 10


def measure(args: argparse.Namespace, root: Path) -> dict:
    """The three rows' img/s (best of ``--repeats``, interleaved) and what they ran."""
    import timm
    import torch

    import zoo_core
    from zoo_core import runtime
    from zoo_core.backbones import registry
    from zoo_core.cache import PixelCache, extract_features
    from zoo_core.cache import passes as zpasses
    from zoo_core.cache import policy as zpolicy
    from zoo_core.data import normalize
    from zoo_core.distributed import DistContext

    device = torch.device("cpu" if args.cpu else "cuda")
    precision = runtime.resolve_precision(args.precision, device)
    adapter = registry.get_adapter(args.model)[0]
    dc = adapter.data_config(args.model).with_image_size(args.image_size)
    (h, w), b = dc.image_size, args.batch_size
    torch.manual_seed(0)
    ours_model = zoo_core.create(args.model, num_classes=None, weights=None)
    timm_model = timm.create_model(args.model.removeprefix("timm/"), pretrained=False)
    timm_model.load_state_dict(ours_model.state_dict())  # same weights: the same pass check outcome
    timm_model.to(device=device, memory_format=torch.channels_last).eval()
    x_timm = torch.randn(b, 3, h, w, device=device).contiguous(memory_format=torch.channels_last)
    pixels = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x_ours = normalize(pixels.to(device), dc).contiguous(memory_format=torch.channels_last)  # as extraction does
    cudnn_default = torch.backends.cudnn.benchmark

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timm_step() -> None:
        with autocast(device, precision):
            timm_model(x_timm)

    def run_timm() -> float:
        torch.backends.cudnn.benchmark = True  # timm's benchmark.py sets it at import
        try:
            with torch.no_grad():
                return timed(timm_step, sync, args.warmup, args.iters, b)
        finally:
            torch.backends.cudnn.benchmark = cudnn_default

    with zpasses.inference_setup(ours_model, device):
        chosen, _ = zpolicy.choose_pass(zpolicy.candidate_passes(ours_model, adapter, device, args.precision),
                                        x_ours, DistContext(), args.precision)

    def run_pass() -> float:
        with zpasses.inference_setup(ours_model, device):
            return timed(lambda: chosen.run(x_ours), sync, args.warmup, args.iters, b)

    n_images = b * args.iters
    t = time.perf_counter()
    big = PixelCache.build(RandomPixels(n_images, dc.resize_size), dc, fingerprint="random-bench", split="bench",
                           root=root, progress=False)
    small = PixelCache.build(RandomPixels(b * max(args.warmup, 1), dc.resize_size, seed=1), dc,
                             fingerprint="random-warmup", split="bench", root=root, progress=False)
    print(f"pixel caches: {n_images} + {len(small)} random {h}x{w} images ({time.perf_counter() - t:.1f}s, not timed)",
          file=sys.stderr, flush=True)

    def run_extract() -> float:
        def extract(pixels: PixelCache) -> int:
            return len(extract_features(ours_model, adapter, None, dc, pixels=pixels, batch_size=b, device=device,
                                        precision=args.precision, progress=False))
        extract(small)  # warm-up
        sync()
        t0 = time.perf_counter()
        n = extract(big)
        sync()
        return n / (time.perf_counter() - t0)

    best = {"timm": 0.0, "pass": 0.0, "extract": 0.0}
    for _ in range(args.repeats):
        for name, fn in (("timm", run_timm), ("pass", run_pass), ("extract", run_extract)):
            best[name] = max(best[name], fn())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads) - DRY RUN, not a "
        "measurement")
    return {"model": args.model, "batch_size": b, "image_size": [h, w], "precision": precision,
            "requested_precision": args.precision, "pass": chosen.name, "pass_precision": chosen.precision,
            "device": where, "img_s": best, "ratio_pass": best["pass"] / best["timm"],
            "ratio_extract": best["extract"] / best["timm"], "extract_images": n_images,
            "warmup": args.warmup, "iters": args.iters, "repeats": args.repeats}


def report(r: dict) -> bool:
    """Print the rows side by side and the PASS/MISS line; True when the target is met."""
    rows = [
        ["timm benchmark.py-style inference", r["precision"], f"{r['img_s']['timm']:.1f}", "1.00x"],
        [f"ours: ForwardPass {r['pass']}", r["pass_precision"], f"{r['img_s']['pass']:.1f}", f"{r['ratio_pass']:.2f}x"],
        [f"ours: extract_features ({r['extract_images']} images)", r["pass_precision"], f"{r['img_s']['extract']:.1f}",
         f"{r['ratio_extract']:.2f}x"],
    ]
    header = ["variant", "precision", "img/s", "vs timm"]
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(4)]
    h, w = r["image_size"]
    print(f"\n{r['model']}, batch {r['batch_size']}, {h}x{w}, precision {r['requested_precision']} -> "
          f"{r['precision']}, {r['warmup']} warm-up + {r['iters']} timed steps, best of {r['repeats']}; {r['device']}")
    for row in [header, *rows]:
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
    met = r["ratio_pass"] >= TARGET
    print(f"[{'PASS' if met else 'MISS'}] our pass >= {TARGET:.0%} of timm's img/s: {r['ratio_pass']:.0%} "
          f"(extract_features end to end: {r['ratio_extract']:.0%})")
    return met


def main() -> None:
    """Parse arguments; measure timm's benchmark-style inference, our pass and our extraction loop side by side."""
    ap = _common.parser(__doc__, batch_size=256, repeats=3)
    ap.add_argument("--model", default="timm/resnet50", help="a zoo timm backbone name (timm/<timm model name>)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                    help="ours gets this (auto: resolved, then checked against fp32); timm the resolved precision")
    ap.add_argument("--warmup", type=int, default=10, help="warm-up steps (timm's --num-warm-iter)")
    ap.add_argument("--iters", type=int, default=40, help="timed steps (timm's --num-bench-iter)")
    ap.add_argument("--image-size", type=int, default=None, help="default: the zoo data config's input size")
    ap.add_argument("--cpu", action="store_true", help="dry-run on the CPU (use tiny sizes; not a measurement)")
    _common.add_out(ap)
    args = ap.parse_args()
    if min(args.batch_size, args.iters, args.repeats) < 1 or args.warmup < 0:
        ap.error("--batch-size, --iters and --repeats must be >= 1, --warmup >= 0")
    if not args.model.startswith("timm/"):
        ap.error(f"--model {args.model!r}: give a timm model as timm/<name> (timm's benchmark.py builds it too)")

    import torch

    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit(f"cuda_pass_vs_timm: no CUDA GPU here (torch {torch.__version__}, CUDA build "
                         f"{torch.version.cuda or 'none'}); nothing measured. --cpu dry-runs the same code on the CPU.")
    root = Path(tempfile.mkdtemp(prefix="bench-cuda-pass-"))  # the pixel caches; removed at the end
    try:
        result = measure(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["target_met"] = report(result)
    if args.out:
        _common.write_json(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
