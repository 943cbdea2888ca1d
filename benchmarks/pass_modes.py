"""Every way to run the frozen backbone during feature extraction, side by side with the plain loop's step.

    .venv/bin/python benchmarks/pass_modes.py [--images 96] [--batch-size 32] [--repeats 3] [--modes ...]
        [--no-native-bf16] [--decode N] [--accuracy N] [--memory] [--out numbers.json]
        [--backbones resnet18 efficientnet_lite0 ...]

**Speed** (always), per ``--backbones`` (default ResNet-18): torchvision ResNet-18 (random init with
non-trivial BatchNorm statistics; speed does not depend on the weights) or an EfficientNet-Lite with its
ImageNet weights, on ``--images`` pre-decoded, normalised images at the backbone's input size, batch
``--batch-size``.
Each mode is set up (its *setup* seconds: building, exporting, calibrating, compiling, the first batch
included; ``torch.compile`` starts from an empty inductor cache, so this is its cold compile), then all
modes and the reference run interleaved, ``--repeats`` times, best kept (robust to other load on the
machine). The reference, ``plain step``, is the plain hand-written loop's step
(``benchmarks/transfer_vs_plain_loop.py``): ``model.train()``, every backbone parameter frozen, fp32
forward + ``fc`` backward + SGD step. Columns: img/s, ratio to the plain step, relative L2 error of the
features against eager fp32, and the pass check's criterion (:func:`zoo_core.cache.criterion.standardised_error`,
accepted up to ``criterion.TOLERANCE``).

Modes marked ``product`` are the passes :mod:`zoo_core.cache.passes` builds (eager, ``bnfold``, ``int8``);
the others are the alternatives evaluated for them and left out (``torch.compile``/inductor, PT2E int8
from ``torchao`` + inductor, OpenVINO), each run only when its package is installed
(``pip install torchao openvino`` for the last ones). ``auto`` is what extraction picks here for a split of
``--auto-images`` images, and on a CPU with native bf16 also what it picks without (simulated;
``--no-native-bf16`` simulates that for the whole run).

**Decoding** (``--decode N``): N generated 500×375 JPEG photos decoded, resized and center-cropped to 224
px as the pixel cache does (:class:`zoo_core.cache.PixelCache` through ``eval_transform``), with 0, 1 and 2
loader workers, against the ``auto`` pass: which side is the slower one.

**Accuracy** (``--accuracy N``): real ImageNet weights (each EfficientNet-Lite of ``--backbones``, else
``efficientnet_lite0``; ``weights="DEFAULT"``, offline) on N generated demo images (half train, half val);
features of each product mode, of what ``auto`` picks for N images, of PT2E int8 when installed, and of
eager fp32 plus Gaussian noise of a given standardised size (``noise``, the criterion's calibration); the
converged linear head (:func:`zoo_core.headfit.fit_linear_head`) fitted on each mode's train features,
validation accuracy against the fp32 head's, and the criterion on the first batch (what the check sees).

**Memory** (``--memory``): each product mode, and the plain step, in a child process over the same
batches: peak RSS (``VmHWM``). Printed first: decoding and these children run before the speed table.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

# a cold torch.compile: an empty inductor cache of our own (set before torch is imported)
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="pass-modes-inductor-"))

import _common  # noqa: E402  (the repository on sys.path)
import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

from zoo_core import runtime  # noqa: E402
from zoo_core.backbones import registry
from zoo_core.backbones.adapter import BackboneAdapter, DataConfig  # noqa: E402
from zoo_core.comparison.measure import hwm_mb  # noqa: E402
from zoo_core.distributed import DistContext  # noqa: E402
from zoo_core.onnxgraph import missing_packages  # noqa: E402

criterion = importlib.import_module("zoo_core.cache.criterion")

passes = importlib.import_module("zoo_core.cache.passes")
policy = importlib.import_module("zoo_core.cache.policy")
onnxrt = importlib.import_module("zoo_core.cache.onnxrt")
CPU = torch.device("cpu")
Run = Callable[[torch.Tensor], torch.Tensor]


# ---- the backbone and its data ---------------------------------------------------------------------
def resnet18() -> tuple[nn.Module, BackboneAdapter]:
    """Random-init ResNet-18 with BatchNorm statistics that are not the identity (so folding is real)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model, registry.get_adapter("resnet18")[0]


def backbone(name: str) -> tuple[nn.Module, BackboneAdapter, int]:
    """``resnet18`` as above, or a backbone with its ImageNet weights, eval mode; and its input size."""
    if name == "resnet18":
        return (*resnet18(), 224)
    import zoo_core

    adapter = registry.get_adapter(name)[0]
    return zoo_core.create(name, num_classes=10, weights="DEFAULT").eval(), adapter, adapter.data_config(name).image_size[-1]


def normalised_batches(n: int, batch: int, size: int) -> list[torch.Tensor]:
    """``n`` random images, normalised and channels-last as extraction feeds the backbone."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, size, size, generator=g).sub(0.45).div(0.226)
    return [b.contiguous(memory_format=torch.channels_last) for b in x.split(batch)]


# ---- the modes ---------------------------------------------------------------------------------------
Features = onnxrt.FeaturesModule  # adapter.features(model, x) as a module: what the exporters and compilers trace


def _exported(model: nn.Module, adapter: BackboneAdapter, x: torch.Tensor) -> nn.Module:
    """The features graph through ``torch.export`` (static shapes), unused outputs removed."""
    gm = torch.export.export(Features(model, adapter), (x,)).module()
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return runtime.autocast(CPU, "bf16" if bf16 else "fp32")


def compile_mode(bf16: bool) -> Callable[[nn.Module, BackboneAdapter, torch.Tensor], Run]:
    """``torch.compile`` (inductor, ``freezing``: weights constant-folded and prepacked) of the features graph."""
    def build(model: nn.Module, adapter: BackboneAdapter, x: torch.Tensor) -> Run:
        import torch._inductor.config as inductor
        inductor.freezing = True
        compiled = torch.compile(_exported(model, adapter, x))

        def run(t: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), _autocast(bf16):
                return compiled(t).float()
        return run
    return build


def _unique_source_partitions(gm: nn.Module) -> None:
    """torch 2.14's non-strict export leaves ``source_fn_stack`` empty, and the partitioner's fallback then
    merges every call of a module used twice (ResNet's ``relu``) into one partition, which the x86
    quantizer rejects ("more than one output node"); give each call its own partition again."""
    for node in gm.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function" or not stack or node.meta.get("source_fn_stack") is not None:
            continue
        key, (_fqn, cls) = list(stack.items())[-1]
        if isinstance(cls, str):
            mod, _, name = cls.rpartition(".")
            cls = getattr(importlib.import_module(mod), name)
        if cls.__module__.startswith("torch.nn.modules"):
            node.meta["source_fn_stack"] = [(key, cls)]


def pt2e_mode(bf16: bool) -> Callable[[nn.Module, BackboneAdapter, torch.Tensor], Run]:
    """PT2E static int8 (torchao's ``X86InductorQuantizer``, calibrated on the first batch) lowered by inductor."""
    def build(model: nn.Module, adapter: BackboneAdapter, x: torch.Tensor) -> Run:
        import torch._inductor.config as inductor
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        inductor.freezing = True
        gm = _exported(model, adapter, x)
        _unique_source_partitions(gm)
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(gm, quantizer)
        with torch.no_grad():
            prepared(x)
        compiled = torch.compile(convert_pt2e(prepared))
        size = len(x)

        def run(t: torch.Tensor) -> torch.Tensor:
            pad = size - len(t)  # static shapes: pad a short batch instead of compiling again
            if pad:
                t = torch.cat([t, t.new_zeros(pad, *t.shape[1:])])
            with torch.no_grad(), _autocast(bf16):
                return compiled(t).float()[:size - pad]
        return run
    return build


def openvino_mode(hint: str) -> Callable[[nn.Module, BackboneAdapter, torch.Tensor], Run]:
    """OpenVINO's CPU plugin on the converted features graph, inference precision ``hint`` (f32 or bf16)."""
    def build(model: nn.Module, adapter: BackboneAdapter, x: torch.Tensor) -> Run:
        import openvino as ov
        compiled = ov.Core().compile_model(ov.convert_model(Features(model, adapter), example_input=x), "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        return lambda t: torch.from_numpy(request.infer([t.contiguous().numpy()])[compiled.output(0)].copy())
    return build


def product(mode: str, precision: str) -> Callable[[nn.Module, BackboneAdapter, torch.Tensor], Run]:
    """A pass as :mod:`zoo_core.cache.passes` builds it."""
    return lambda model, adapter, x: passes.BUILDERS[mode](model, adapter, CPU, precision).run


# name → (builder, product?, packages it needs, needs native bf16 to be worth timing)
MODES: dict[str, tuple[Callable[..., Run], bool, tuple[str, ...], bool]] = {
    "eager fp32": (product("eager", "fp32"), True, (), False),
    "bnfold fp32": (product(passes.FOLD, "fp32"), True, (), False),
    "int8 (ORT)": (product(passes.INT8, "fp32"), True, onnxrt.INT8_PACKAGES, False),
    "onnx fp32 (ORT)": (product(passes.ONNX, "fp32"), True, onnxrt.INT8_PACKAGES, False),
    "eager bf16": (product("eager", "bf16"), True, (), True),
    "bnfold bf16": (product(passes.FOLD, "bf16"), True, (), True),
    "compile fp32": (compile_mode(False), False, (), False),
    "compile bf16": (compile_mode(True), False, (), True),
    "pt2e int8": (pt2e_mode(False), False, ("torchao",), False),
    "pt2e int8+bf16": (pt2e_mode(True), False, ("torchao",), True),
    "openvino fp32": (openvino_mode("f32"), False, ("openvino",), False),
    "openvino bf16": (openvino_mode("bf16"), False, ("openvino",), True),
}


missing = missing_packages  # the packages of a tuple that are not installed here


def plain_step(model: nn.Module, batch: int, head: str = "fc") -> Run:
    """The plain loop's step: train mode, frozen backbone, fp32 forward + ``head`` backward + SGD step."""
    net = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    for name, p in net.named_parameters():
        p.requires_grad_(name.startswith(f"{head}."))
    opt = torch.optim.SGD(net.get_submodule(head).parameters(), lr=1e-3)
    net.train()
    y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(2))

    def step(x: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(x.contiguous()), y[:len(x)])
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def time_round_robin(runs: dict[str, Run], batches: list[torch.Tensor], repeats: int) -> dict[str, float]:
    """Best img/s of each run over ``repeats`` passes over ``batches``, the runs interleaved."""
    n = sum(len(b) for b in batches)
    best = dict.fromkeys(runs, 0.0)
    for _ in range(repeats):
        for name, run in runs.items():
            t = time.perf_counter()
            for b in batches:
                run(b)
            best[name] = max(best[name], n / (time.perf_counter() - t))
    return best


def auto_choice(model: nn.Module, adapter: BackboneAdapter, x: torch.Tensor, n_images: int) -> tuple[str, Run]:
    """The pass extraction picks here for ``n_images`` images with ``precision="auto"`` (checked on ``x``)."""
    candidates = policy.candidate_passes(model, adapter, CPU, "auto", n_images)
    chosen, _ = policy.choose_pass(candidates, x, DistContext(), "auto")
    return chosen.name, chosen.run


has_native = runtime.cpu_has_native_bf16


def speed(args: argparse.Namespace, name: str) -> dict[str, Any]:
    model, adapter, size = backbone(name)
    batches = normalised_batches(args.images, args.batch_size, size)
    native = runtime.cpu_has_native_bf16()
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        exact = adapter.features(cl, batches[0])
    rows: dict[str, dict[str, Any]] = {}
    runs: dict[str, Run] = {"plain step": plain_step(model, args.batch_size, adapter.head_name(model))}
    for mode in args.modes:
        build, is_product, needs, bf16 = MODES[mode]
        row = rows[mode] = {"product": is_product}
        if missing(needs):
            row["note"] = f"not installed: {', '.join(missing(needs))}"
            continue
        if bf16 and not native and not args.emulated_bf16:
            row["note"] = "no native bf16 here (--emulated-bf16 to time it anyway)"
            continue
        net = copy.deepcopy(cl)  # each mode prepares its own (the product passes leave it untouched)
        t = time.perf_counter()
        try:
            run = build(net, adapter, batches[0])
            f = run(batches[0])
        except Exception as exc:  # noqa: BLE001 - a mode that fails is reported, the others go on
            row["note"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            continue
        row["setup_s"] = time.perf_counter() - t
        row["rel_error"] = criterion.relative_error(f, exact)
        row["criterion"] = criterion.standardised_error(f, exact)
        runs[mode] = run
    autos = {}
    for simulated in ([False, True] if native else [False]):
        if simulated:
            runtime.cpu_has_native_bf16 = lambda: False  # as on an AVX2 CPU (benchmark only)
        choice, run = auto_choice(copy.deepcopy(cl), adapter, batches[0], args.auto_images)
        runtime.cpu_has_native_bf16 = has_native
        auto = f"auto{' no-bf16 (simulated)' if simulated else ''} → {choice}"
        runs[auto], rows[auto], autos[auto] = run, {"product": True}, choice
    for run in runs.values():
        run(batches[-1])  # warm-up (a short last batch too)
    rates = time_round_robin(runs, batches, args.repeats)
    for name, rate in rates.items():
        rows.setdefault(name, {"product": False})
        rows[name].update(img_s=rate, vs_plain=rate / rates["plain step"])
    print(f"\nspeed: {name}, {args.images} images at {size} px, batch {args.batch_size}, {torch.get_num_threads()} "
          f"threads, best of {args.repeats} interleaved; native bf16: {native}"
          f"{' (simulated off)' if args.no_native_bf16 else ''}; auto decides for a {args.auto_images}-image split")
    print(f"{'mode':<34} {'kind':<8} {'setup s':>8} {'img/s':>8} {'vs plain':>9} {'rel err':>9} {'std err':>8}  note")
    order = ["plain step"] + [k for k in rows if k != "plain step"]
    for mode in order:
        r = rows[mode]
        kind = "product" if r.get("product") else ("ref" if mode == "plain step" else "alt")
        cells = [f"{r['setup_s']:8.1f}" if "setup_s" in r else f"{'':8}",
                 f"{r['img_s']:8.1f}" if "img_s" in r else f"{'-':>8}",
                 f"{r['vs_plain']:8.2f}x" if "vs_plain" in r else f"{'-':>9}",
                 f"{r['rel_error']:9.2e}" if "rel_error" in r else f"{'':9}",
                 f"{r['criterion']:8.3f}" if "criterion" in r else f"{'':8}"]
        print(f"{mode:<34} {kind:<8} {' '.join(cells)}  {r.get('note', '')}")
    first = next(iter(autos))
    return {"backbone": name, "rows": rows, "native_bf16": native, "threads": torch.get_num_threads(), "auto": autos[first],
            "auto_img_s": rates[first], "auto_images": args.auto_images}


# ---- decoding against the pass ------------------------------------------------------------------------
def decode(args: argparse.Namespace) -> dict[str, Any]:
    """img/s of decoding alone per worker count; run before any mode starts thread pools (inductor and
    OpenVINO ones do not survive the loader workers' fork)."""
    from zoo_core import data

    cfg = DataConfig(input_size=(3, 224, 224))  # resize 256, center crop 224, bilinear
    out: dict[str, Any] = {"images": args.decode, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="pass-modes-jpeg-") as tmp:
        files = _common.demo_jpegs(Path(tmp), args.decode)

        class Folder(torch.utils.data.Dataset):
            def __len__(self) -> int:
                return len(files)

            def __getitem__(self, i: int) -> tuple[Any, int]:
                return data.load_image(files[i]), 0

        workers = sorted({0, 1, 2, data.auto_num_workers(len(files))})
        for _ in range(args.repeats):  # interleaved, best kept, as for the passes
            for w in workers:
                loader = data.make_loader(data.Transformed(Folder(), data.eval_transform(cfg)), batch_size=64,
                                          shuffle=False, num_workers=w)
                t = time.perf_counter()
                n = sum(len(x) for x, _ in loader)
                out["rows"][w] = max(out["rows"].get(w, 0.0), n / (time.perf_counter() - t))
                del loader
    return out


def print_decode(out: dict[str, Any], pass_rate: float, pass_name: str) -> None:
    """The decoding rates against the ``auto`` pass's."""
    from zoo_core import data

    out.update({"pass": pass_name, "pass_img_s": pass_rate})
    print(f"\ndecode + resize + center crop alone ({out['images']} JPEG 500×375 → 224 px) vs the pass ({pass_name})")
    print(f"{'workers':>8} {'img/s':>8} {'vs pass':>8}")
    for w, rate in out["rows"].items():
        default = w == data.auto_num_workers(out["images"])
        mark = "  ← the pixel cache's default (data.auto_num_workers)" if default else ""
        print(f"{w:>8} {rate:8.1f} {rate / pass_rate:7.2f}x{mark}")
    print(f"{'pass':>8} {pass_rate:8.1f}")


# ---- accuracy with real weights ------------------------------------------------------------------------
NOISE = (0.25, 0.5, 1.0, 2.0)  # standardised sizes of the noise rows (the criterion's calibration)


def noisy(exact: dict[str, torch.Tensor], level: float) -> dict[str, torch.Tensor]:
    """Eager fp32 features plus Gaussian noise of ``level`` times each feature's between-image std (that of
    the first batch, floored as the head fit floors it): a pass worse by a known amount."""
    _, inv_std = criterion.moments(exact["first"].double())
    g = torch.Generator().manual_seed(7)
    out = {p: f + level * torch.randn(f.shape, generator=g) / inv_std.float() for p, f in exact.items() if p != "first"}
    return {**out, "first": out["train"][:len(exact["first"])]}


def accuracy(args: argparse.Namespace, name: str) -> dict[str, Any]:
    import zoo_core
    from zoo_core import data
    from zoo_core.data.demo import make_demo_dataset
    from zoo_core.headfit import fit_linear_head

    model = zoo_core.create(name, num_classes=6, weights="DEFAULT").eval().to(memory_format=torch.channels_last)
    adapter = registry.get_adapter(name)[0]
    dc = adapter.data_config(name)
    with tempfile.TemporaryDirectory(prefix="pass-modes-demo-") as tmp:
        root = make_demo_dataset(Path(tmp) / "demo", per_class=max(2, args.accuracy // 6), size=160, seed=5,
                                 progress=False)
        split = data.load_data(root, val_fraction=0.5, seed=0, progress=False)
        xs, ys = {}, {}
        for part in ("train", "val"):
            loader = data.make_loader(data.Transformed(getattr(split, part), data.eval_transform(dc)),
                                      batch_size=args.batch_size, shuffle=False)
            pairs = [(x, y) for x, y in loader]
            xs[part] = [data.normalize(x, dc).contiguous(memory_format=torch.channels_last) for x, _ in pairs]
            ys[part] = torch.cat([torch.as_tensor(y) for _, y in pairs])
    n_images = len(ys["train"]) + len(ys["val"])

    def auto(net: nn.Module, adapter: BackboneAdapter, x: torch.Tensor) -> Run:
        name, run = auto_choice(net, adapter, x, n_images)
        print(f"auto for {n_images} images picks {name}")
        return run

    modes = {"eager fp32": product("eager", "fp32"), "onnx fp32 (ORT)": product(passes.ONNX, "fp32"),
             "int8 (ORT)": product(passes.INT8, "fp32"), f"auto ({n_images})": auto}
    if runtime.cpu_has_native_bf16():
        modes["bnfold bf16"] = product(passes.FOLD, "bf16")
    if not missing(("torchao",)):
        modes["pt2e int8"] = MODES["pt2e int8"][0]
    feats: dict[str, dict[str, torch.Tensor]] = {}
    for mode, build in modes.items():
        try:
            run = build(copy.deepcopy(model), adapter, xs["train"][0])
            feats[mode] = {p: torch.cat([run(x) for x in xs[p]]) for p in ("train", "val")}
            feats[mode]["first"] = feats[mode]["train"][:len(xs["train"][0])]
        except Exception as exc:  # noqa: BLE001
            print(f"{mode}: failed ({type(exc).__name__}: {exc})")
    feats.update({f"noise {level}": noisy(feats["eager fp32"], level) for level in NOISE})
    rows = {}
    ref = feats["eager fp32"]
    ref_head = None
    for mode, f in feats.items():
        fit = fit_linear_head(f["train"], ys["train"], 6, seed=0)
        acc = float((f["val"] @ fit.weight.T + fit.bias).argmax(1).eq(ys["val"]).float().mean()) * 100
        if ref_head is None:
            ref_head = fit
        same = float((f["val"] @ ref_head.weight.T + ref_head.bias).argmax(1).eq(
            (ref["val"] @ ref_head.weight.T + ref_head.bias).argmax(1)).float().mean()) * 100
        rows[mode] = {"val_acc": acc, "rel_error": criterion.relative_error(f["val"], ref["val"]),
                      "fp32_head_agree": same, "criterion": criterion.standardised_error(f["first"], ref["first"])}
    n_val = len(ys["val"])
    print(f"\naccuracy: {name} (ImageNet weights), demo shapes, {len(ys['train'])} train / {n_val} val images "
          f"(1 image = {100 / n_val:.2f} points), converged linear head per mode")
    print(f"{'mode':<18} {'val acc %':>9} {'Δ points':>9} {'rel err':>9} {'fp32 head agrees %':>19} "
          f"{'std err (1st batch)':>20}")
    for mode, r in rows.items():
        print(f"{mode:<18} {r['val_acc']:9.2f} {r['val_acc'] - rows['eager fp32']['val_acc']:+9.2f} "
              f"{r['rel_error']:9.2e} {r['fp32_head_agree']:19.2f} {r['criterion']:20.3f}")
    print(f"(the check accepts a standardised error up to {criterion.TOLERANCE})")
    return {"backbone": name, "train": len(ys["train"]), "val": n_val, "rows": rows}


# ---- memory ------------------------------------------------------------------------------------------
def child_peak(mode: str, images: int, batch: int) -> dict[str, Any]:
    """Run ``mode`` (or ``plain step``) over the batches in this process; its peak RSS in MiB."""
    model, adapter = resnet18()
    batches = normalised_batches(images, batch, 224)
    if mode == "plain step":
        run = plain_step(model, batch)
        del model
    else:
        model = model.to(memory_format=torch.channels_last)
        run = MODES[mode][0](model, adapter, batches[0])
    for b in batches:
        run(b)
    return {"mode": mode, "peak_rss_mib": hwm_mb()}


def memory(args: argparse.Namespace) -> dict[str, Any]:
    names = ["plain step"] + [m for m in args.modes if MODES[m][1] and not missing(MODES[m][2])
                              and (not MODES[m][3] or runtime.cpu_has_native_bf16())]
    out = {}
    for name in names:
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--images", str(args.images),
                               "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=False)
        line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        out[name] = json.loads(line)["peak_rss_mib"] if line.startswith("{") else None
    print(f"\npeak RSS, each in its own process ({args.images} images, batch {args.batch_size})")
    for name, mib in out.items():
        ratio = f"{mib / out['plain step']:.3f}x" if mib and out["plain step"] else ""
        print(f"{name:<14} {mib if mib is None else round(mib):>6} MiB  {ratio}")
    return out


def main() -> None:
    ap = _common.parser(__doc__, images=96, batch_size=32, repeats=3)
    ap.add_argument("--backbones", nargs="+", default=["resnet18"], metavar="NAME",
                    help="speed: these backbones; accuracy: the EfficientNet-Lites among them (default lite0)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), metavar="MODE")
    ap.add_argument("--auto-images", type=int, default=5000, help="split size the auto row decides for")
    ap.add_argument("--no-native-bf16", action="store_true",
                    help="simulate a CPU without native bf16 (auto resolves to fp32, bf16 rows skipped)")
    ap.add_argument("--emulated-bf16", action="store_true", help="time the bf16 rows without native bf16 too")
    ap.add_argument("--decode", type=int, default=0, metavar="N", help="also time decoding N JPEGs")
    ap.add_argument("--accuracy", type=int, default=0, metavar="N", help="also the head accuracy on N images")
    ap.add_argument("--memory", action="store_true", help="also the peak RSS of each product mode")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed table (and --decode, which needs it)")
    _common.add_out(ap)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.no_native_bf16:
        global has_native
        runtime.cpu_has_native_bf16 = has_native = lambda: False  # benchmark only: as on an AVX2 CPU
    if args.child:
        print(json.dumps(child_peak(args.child, args.images, args.batch_size)))
        return
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{os.cpu_count()} CPUs")
    # decoding and the memory children first: the inductor and OpenVINO modes leave thread pools behind
    # that a forked loader worker (or, at times, a later child process) does not survive
    decoded = decode(args) if args.decode and not args.no_speed else None
    results: dict[str, Any] = {"memory": memory(args)} if args.memory else {}
    if not args.no_speed:
        results["speed"] = {name: speed(args, name) for name in args.backbones}
    if decoded is not None:
        first = results["speed"][args.backbones[0]]
        print_decode(decoded, first["auto_img_s"], first["auto"])
        results["decode"] = decoded
    if args.accuracy:
        lites = [n for n in args.backbones if n.startswith("efficientnet_lite")] or ["efficientnet_lite0"]
        results["accuracy"] = {name: accuracy(args, name) for name in lites}
    if args.out:
        _common.write_json(args.out, results)


if __name__ == "__main__":
    main()
