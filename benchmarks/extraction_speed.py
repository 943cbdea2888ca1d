"""Feature extraction vs a frozen-backbone train step, and bf16 vs fp32 — side by side.

    .venv/bin/python benchmarks/extraction_speed.py [--images 256] [--batch-size 32] [--size 224]

Random-init torchvision resnet18 (no download). Rows:

- extraction as :func:`zoo_core.cache.extract_features` runs it: eval, ``inference_mode``,
  channels-last, fp32 / bf16 autocast; and plain contiguous fp32 for reference;
- a classic hand-written step: ``model.train()``, every parameter but ``fc`` frozen, fp32
  forward + backward + SGD step — what each epoch costs without the feature cache;
- ``extract_features`` end to end on PIL images (decode + resize + crop + forward), precision "auto";
- one epoch of head training on the extracted features.

The model rows run on pre-decoded tensors so they compare compute only. Then bf16 features are
compared with fp32 ones on the same images (max abs, relative, cosine), which is what decides
whether ``precision="auto"`` may use bf16, and what ``auto`` resolves to on this machine.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import time

import _common  # noqa: E402  (the repository on sys.path)
import torch
import torchvision
from torch import nn
from torchvision.datasets import FakeData

from zoo_core import cache, runtime  # noqa: E402
from zoo_core.backbones.adapter import BackboneAdapter, DataConfig  # noqa: E402
from zoo_core.cache import criterion  # noqa: E402


def time_round_robin(variants: list[tuple[str, object, list]], repeats: int) -> dict[str, float]:
    """Best images/s of each ``(name, fn, batches)`` over ``repeats`` passes, run in turn.

    Interleaving the variants and keeping the best pass makes the ratios robust to other load on the
    machine (on a shared 2-core box a median can be off by 3x).
    """
    for _, fn, batches in variants:
        fn(batches[0])  # warm-up
    best = {name: 0.0 for name, _, _ in variants}
    for _ in range(repeats):
        for name, fn, batches in variants:
            t = time.perf_counter()
            for b in batches:
                fn(b)
            best[name] = max(best[name], sum(len(b) for b in batches) / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = _common.parser(__doc__, images=256, batch_size=32, repeats=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--skip-bf16-speed", action="store_true", help="bf16 is very slow on CPUs without it")
    args = ap.parse_args()

    torch.manual_seed(0)
    device = torch.device("cpu")
    model = torchvision.models.resnet18(num_classes=10)
    adapter = BackboneAdapter()
    cfg = DataConfig(input_size=(3, args.size, args.size))
    n, bs = args.images, args.batch_size
    x_all = torch.randn(n, 3, args.size, args.size)
    y_all = torch.randint(0, 10, (n,))
    batches = list(x_all.split(bs))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {runtime.cpu_has_native_bf16()}, "
          f"auto precision → {runtime.resolve_precision('auto', device)}")
    print(f"resnet18 (random init), {n} images at {args.size}px, batch {bs}\n")

    def extractor(net: nn.Module, channels_last: bool, precision: str):
        net.eval()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" \
            else contextlib.nullcontext

        def step(x):
            with torch.inference_mode(), ctx():
                return adapter.features(net, x.contiguous(memory_format=fmt)).float()
        return step

    # the hand-written loop: frozen backbone, train mode, fp32, forward + backward + step every epoch
    train_model = copy.deepcopy(model)
    for name, p in train_model.named_parameters():
        p.requires_grad_(name.startswith("fc."))
    opt = torch.optim.SGD([p for p in train_model.parameters() if p.requires_grad], lr=0.01)
    train_model.train()
    ys = list(y_all.split(bs))
    it = {"i": 0}

    def train_step(x):
        y = ys[it["i"] % len(ys)]
        it["i"] += 1
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(train_model(x), y).backward()
        opt.step()

    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    variants = [
        ("extract: eval+inference_mode, channels-last, fp32", extractor(cl_model, True, "fp32"), batches),
        ("extract: eval+inference_mode, contiguous, fp32", extractor(model, False, "fp32"), batches),
        ("train step: model.train(), frozen but fc, fp32 fwd+bwd", train_step, batches),
    ]
    if not args.skip_bf16_speed:  # 2 batches only: emulated bf16 (no AVX512-BF16/AMX) is very slow
        variants.insert(1, ("extract: eval+inference_mode, channels-last, bf16",
                            extractor(cl_model, True, "bf16"), batches[:2]))
    rates = time_round_robin(variants, args.repeats)
    train_rate = rates["train step: model.train(), frozen but fc, fp32 fwd+bwd"]
    rows = list(rates.items())

    # end to end through extract_features (decode PIL + resize + crop + forward), no cache
    ds = FakeData(size=n, image_size=(3, int(args.size * 8 / 7), int(args.size * 8 / 7)), num_classes=10)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BACKBONE_ZOO_CACHE"] = tmp
        t = time.perf_counter()
        fs = cache.extract_features(model, adapter, ds, cfg, key=None, batch_size=bs, precision="auto",
                                    progress=False)
        rows.append(("extract_features end to end (PIL decode+resize), auto", n / (time.perf_counter() - t)))

    head = nn.Linear(fs.dim, 10)
    hopt = torch.optim.SGD(head.parameters(), lr=0.01)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(fs.features, fs.labels), batch_size=bs,
                                         shuffle=True)

    def head_epoch(_):
        for f, y in loader:
            hopt.zero_grad()
            nn.functional.cross_entropy(head(f), y).backward()
            hopt.step()
    rows += time_round_robin([("head epoch on cached features", head_epoch, [fs.features])], 3).items()

    width = max(len(r[0]) for r in rows)
    print(f"{'pass':<{width}}  {'img/s':>9}  {'vs train step':>13}")
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:9.1f}  {rate / train_rate:12.2f}x")

    # bf16 vs fp32 on the same images: decides whether "auto" may use bf16
    xs = x_all[: 2 * bs]
    f32 = extractor(cl_model, True, "fp32")(xs)
    f16 = extractor(cl_model, True, "bf16")(xs)
    diff = (f16 - f32).abs()
    cos = nn.functional.cosine_similarity(f16, f32, dim=1)
    print(f"\nbf16 vs fp32 features on {len(xs)} images ({f32.shape[1]}-d):")
    print(f"  max abs diff        {diff.max().item():.4g}  (max |fp32| {f32.abs().max().item():.4g})")
    print(f"  max abs / max |f32| {diff.max().item() / f32.abs().max().item():.4g}")
    print(f"  relative L2 error   {criterion.relative_error(f16, f32):.4g}")
    print(f"  standardised error  {criterion.standardised_error(f16, f32):.4g}  (auto accepts ≤ {criterion.TOLERANCE})")
    print(f"  min cosine          {cos.min().item():.6f}")
    with torch.no_grad():
        agree = (head(f16.clone()).argmax(1) == head(f32.clone()).argmax(1)).float().mean().item()
    print(f"  head argmax agree   {agree:.3f}")


if __name__ == "__main__":
    main()
