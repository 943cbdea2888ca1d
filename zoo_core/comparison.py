"""Compare backbones × strategies side by side on the same data, split, seed and budget.

``compare(["resnet18", "vgg11", "timm/resnet18.a1_in1k"], "path/to/images")`` trains every entry with
:func:`zoo_core.train` (each backbone with its own preprocessing), then writes a leaderboard
(``leaderboard.md``/``.csv``/``.json``) and plots into ``out_dir``. A failing entry is recorded with its
error and the others go on; rerunning the same command reuses finished entries.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from . import data as zdata
from . import plots, registry
from .errors import WeightsError, ZooError
from .rundir import atomic_write_text
from .trainer import TrainConfig, pick_device, train

COLUMNS = [  # leaderboard column → header
    ("rank", "#"), ("backbone", "backbone"), ("strategy", "strategy"), ("val_acc", "top-1"),
    ("val_top5", "top-5"), ("val_loss", "val loss"), ("total_params", "params"),
    ("trainable_params", "trainable"), ("train_seconds", "train s"), ("infer_images_per_s", "infer img/s"),
    ("peak_mem_mb", "peak MB"), ("weights", "weights"), ("status", "status"), ("run_dir", "run dir"),
]


@dataclass
class Entry:
    """One backbone × strategy result (or failure)."""

    backbone: str
    strategy: str
    status: str = "pending"  # ok | reused | failed
    weights: str = ""  # "pretrained", "RANDOM INIT", or a file/tag
    val_acc: float | None = None
    val_top5: float | None = None
    val_loss: float | None = None
    total_params: int | None = None
    trainable_params: int | None = None
    train_seconds: float | None = None
    infer_images_per_s: float | None = None
    peak_mem_mb: float | None = None
    run_dir: str = ""
    error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        """``backbone [strategy]``."""
        return f"{self.backbone} [{self.strategy}]"


@dataclass
class Leaderboard:
    """All entries, best first, and where the outputs were written."""

    entries: list[Entry]
    out_dir: Path

    def rows(self) -> list[dict[str, Any]]:
        """Leaderboard rows (dicts keyed by column), ranked by top-1 then val loss; failures last."""
        rows = []
        for i, e in enumerate(self.entries, 1):
            d = {k: getattr(e, k, None) for k, _ in COLUMNS if k != "rank"}
            d["rank"] = i if e.status in ("ok", "reused") else "-"
            d["error"] = e.error
            rows.append(d)
        return rows

    def table(self, markdown: bool = False) -> str:
        """The leaderboard as an aligned text table (or Markdown)."""
        cols = [c for c in COLUMNS if c[0] != "run_dir" or markdown]
        cells = [[h for _, h in cols]] + [[_fmt(k, r.get(k)) for k, _ in cols] for r in self.rows()]
        if markdown:
            lines = ["| " + " | ".join(c) + " |" for c in cells]
            lines.insert(1, "|" + "|".join("---" for _ in cols) + "|")
        else:
            widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
            lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
            lines.insert(1, "  ".join("-" * w for w in widths))
        errors = [f"- {e.label}: {e.error}" for e in self.entries if e.error]
        return "\n".join(lines + ([""] + ["Failed entries:"] + errors if errors else []))


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if key in ("val_acc", "val_top5"):
        return f"{v:.4f}"
    if key == "val_loss":
        return f"{v:.4f}"
    if key in ("total_params", "trainable_params"):
        return f"{v / 1e6:.2f}M" if v >= 1e5 else f"{v:,}"
    if key in ("train_seconds", "infer_images_per_s", "peak_mem_mb"):
        return f"{v:.1f}"
    return str(v)


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak on GPU, sampled process RSS on CPU (MB)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mb, self._stop = device, 0.0, threading.Event()

    @staticmethod
    def _rss_mb() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError):
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_mb = max(self.peak_mb, self._rss_mb())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_mb = self._rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, self._rss_mb())


@torch.no_grad()
def inference_speed(run_dir: Path, device: torch.device, batch_size: int = 32, iters: int = 3) -> float:
    """Images/s of the trained model's eval forward pass on one batch at its input size."""
    from .inference import load

    clf = load(run_dir, device=device)
    h, w = clf.data_config.image_size
    x = torch.randn(batch_size, 3, h, w, device=device).contiguous(memory_format=torch.channels_last)
    clf.model.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        clf(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            clf(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return batch_size * iters / (time.perf_counter() - t0)


def expand_backbones(backbones: Sequence[str] | str | None, family: str | None = None) -> list[str]:
    """Resolve names, glob patterns (``"resnet*"``) and a family into a de-duplicated list."""
    items = [backbones] if isinstance(backbones, str) else list(backbones or [])
    out: list[str] = []
    for item in items:
        if any(ch in item for ch in "*?["):
            found = registry.list_backbones(item, family=family)
            if not found:
                raise ZooError(f"pattern {item!r} matches no backbone{f' of family {family!r}' if family else ''}")
            out += found
        else:
            registry.get_adapter(item)  # unknown names fail here, with close matches
            out.append(item)
    if family and not items:
        out = registry.list_backbones(family=family)
        if not out:
            raise ZooError(f"family {family!r} has no backbones; known: {', '.join(registry.families())}")
    if not out:
        raise ZooError("no backbones to compare: name some, use a pattern like 'resnet*', or --family")
    return list(dict.fromkeys(out))


def _signature(backbone: str, strategy: str, fingerprint: str, cfg: TrainConfig) -> str:
    d = asdict(cfg)
    for k in ("progress", "out_dir", "run_name", "num_workers", "backbone", "strategy", "data"):
        d.pop(k, None)
    blob = json.dumps([backbone, strategy, fingerprint, d], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _from_summary(entry: Entry, run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    m = summary["metrics"]
    entry.val_acc, entry.val_top5, entry.val_loss = m.get("val_acc"), m.get("val_top5"), m.get("val_loss")
    entry.total_params, entry.trainable_params = summary["total_params"], summary["trainable_params"]
    entry.train_seconds = summary["train_seconds"]
    entry.history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def compare(backbones: Sequence[str] | str | None, data: Any, *, strategies: Sequence[str] = ("feature-extraction",),
            family: str | None = None, out_dir: str | os.PathLike = "zoo-compare", fallback_random: bool = False,
            rerun: bool = False, merge: bool = False, progress: bool = True,
            **train_overrides: Any) -> Leaderboard:
    """Run every backbone × strategy on the same data and write the leaderboard into ``out_dir``.

    :param fallback_random: when pretrained weights are unavailable, run that entry from random init
        (marked "RANDOM INIT" in the output and leaderboard) instead of recording a failure.
    :param rerun: ignore finished entries and run everything again.
    :param merge: also list finished entries already in ``out_dir`` from earlier calls (other backbones,
        strategies or budgets), so one folder accumulates one leaderboard.
    :param train_overrides: any :class:`zoo_core.TrainConfig` field (epochs, image_size, lr, …).
    """
    names = expand_backbones(backbones, family)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = TrainConfig(**{k: v for k, v in train_overrides.items() if k in TrainConfig.__dataclass_fields__})
    unknown = set(train_overrides) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ZooError(f"unknown training option(s) for compare: {', '.join(sorted(unknown))}")
    split = zdata.load_data(data, val_fraction=base.val_fraction, seed=base.seed, download=base.download,
                            data_root=base.data_root, progress=progress)
    device = pick_device(base.device)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    say(f"zoo compare: {len(names)} backbone(s) × {len(strategies)} strategy(ies) on {split.summary()}")
    entries: list[Entry] = []
    unavailable: set[str] = set()  # backbones whose pretrained weights failed once: don't retry per strategy
    for backbone in names:
        for strategy in strategies:
            entry = Entry(backbone, strategy)
            entries.append(entry)
            _run_entry(entry, split, base, out, device, fallback_random, rerun, progress, say, unavailable)
    if merge:
        entries += _earlier_entries(out, {(e.backbone, e.strategy) for e in entries})
    ranked = sorted(entries, key=lambda e: (e.status not in ("ok", "reused"), -(e.val_acc or 0), e.val_loss or 0))
    board = Leaderboard(ranked, out)
    _write_outputs(board, split)
    say("\n" + board.table())
    say(f"\nzoo compare: leaderboard and plots in {out}/ (leaderboard.md, .csv, .json, *.png)")
    return board


def _run_entry(entry: Entry, split: Any, base: TrainConfig, out: Path, device: torch.device,
               fallback_random: bool, rerun: bool, progress: bool, say: Any, unavailable: set[str]) -> None:
    run_name = f"{entry.backbone.replace('/', '_')}-{entry.strategy}"
    run_dir = out / "runs" / run_name
    entry.run_dir = str(run_dir)
    marker = run_dir / "entry.json"
    weights = None if (fallback_random and entry.backbone in unavailable) else base.weights
    for attempt in ("asked", "random"):
        cfg = TrainConfig(**{**asdict(base), "backbone": entry.backbone, "strategy": entry.strategy,
                             "out_dir": str(out / "runs"), "run_name": run_name, "progress": progress,
                             "weights": weights})
        sig = _signature(entry.backbone, entry.strategy, split.fingerprint, cfg)
        if not rerun and marker.is_file() and json.loads(marker.read_text()).get("signature") == sig:
            done = json.loads(marker.read_text())
            entry.status, entry.weights = "reused", done["weights"]
            entry.infer_images_per_s, entry.peak_mem_mb = done["infer_images_per_s"], done["peak_mem_mb"]
            _from_summary(entry, run_dir)
            say(f"zoo compare: {entry.label}: reusing finished run {run_dir}")
            return
        say(f"zoo compare: {entry.label}: training{' from RANDOM INIT' if weights is None else ''} …")
        try:
            with PeakMemory(device) as mem:
                train(config=cfg, data=split)
            entry.peak_mem_mb = round(mem.peak_mb, 1)
            entry.infer_images_per_s = round(inference_speed(run_dir, device), 1)
            _from_summary(entry, run_dir)
            entry.status = "ok"
            entry.weights = "RANDOM INIT" if weights is None else (
                "pretrained" if weights == "DEFAULT" else str(weights))
            atomic_write_text(marker, json.dumps({
                "signature": sig, "backbone": entry.backbone, "strategy": entry.strategy, "weights": entry.weights, "infer_images_per_s": entry.infer_images_per_s,
                "peak_mem_mb": entry.peak_mem_mb}, indent=2))
            return
        except WeightsError as exc:
            if fallback_random and weights is not None and attempt == "asked":
                unavailable.add(entry.backbone)
                say(f"zoo compare: {entry.label}: WARNING pretrained weights unavailable — running from "
                    f"RANDOM INIT instead ({exc})")
                weights = None
                continue
            _fail(entry, exc, say)
            return
        except (Exception, torch.cuda.OutOfMemoryError) as exc:  # noqa: BLE001 - recorded, others go on
            _fail(entry, exc, say)
            return


def _earlier_entries(out: Path, seen: set[tuple[str, str]]) -> list[Entry]:
    """Finished entries of earlier compare calls into the same folder."""
    found = []
    for marker in sorted((out / "runs").glob("*/entry.json")):
        done = json.loads(marker.read_text())
        key = (done.get("backbone"), done.get("strategy"))
        if None in key or key in seen or not (marker.parent / "summary.json").is_file():
            continue
        e = Entry(key[0], key[1], status="reused", weights=done["weights"], run_dir=str(marker.parent),
                  infer_images_per_s=done["infer_images_per_s"], peak_mem_mb=done["peak_mem_mb"])
        _from_summary(e, marker.parent)
        found.append(e)
    return found


def _fail(entry: Entry, exc: BaseException, say: Any) -> None:
    entry.status = "failed"
    entry.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    say(f"zoo compare: {entry.label}: FAILED — {entry.error}")
    Path(entry.run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(entry.run_dir) / "error.txt", "".join(tb))


def _write_outputs(board: Leaderboard, split: Any) -> None:
    out = board.out_dir
    rows = board.rows()
    atomic_write_text(out / "leaderboard.md", "# backbone-zoo leaderboard\n\n"
                      f"Data: {split.source} — {split.summary()}\n\n" + board.table(markdown=True) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["backbone"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "leaderboard.csv", buf.getvalue())
    atomic_write_text(out / "leaderboard.json", json.dumps(
        {"data": split.source, "classes": split.classes, "entries": rows}, indent=2, default=str) + "\n")
    ok = [e for e in board.entries if e.status in ("ok", "reused")]
    points = [{"label": e.label + (" (random init)" if e.weights == "RANDOM INIT" else ""),
               "acc": e.val_acc, "speed": e.infer_images_per_s, "params": e.total_params} for e in ok]
    plots.scatter(points, "speed", "acc", out / "accuracy_vs_speed.png", xlabel="inference images/s (log)",
                  ylabel="validation top-1", title="accuracy vs inference speed", logx=True)
    plots.scatter(points, "params", "acc", out / "accuracy_vs_params.png", xlabel="parameters (log)",
                  ylabel="validation top-1", title="accuracy vs model size", logx=True)
    plots.curves_overlay({e.label: e.history for e in ok}, out / "learning_curves.png")
