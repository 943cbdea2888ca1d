"""Compare backbones × strategies side by side on the same data, split, seed and budget.

``compare(["resnet18", "vgg11", "timm/resnet18.a1_in1k"], "path/to/images")`` trains every entry with
:func:`zoo_core.train` (each backbone with its own preprocessing), then writes a leaderboard
(``leaderboard.md``/``.csv``/``.json``) and plots into ``out_dir``. A failing entry is recorded with its
error and the others go on; rerunning the same command reuses finished entries.

Images are decoded, resized and cropped once per distinct preprocessing into the shared pixel cache
(``share_decoding``) before the entry that first needs them starts its clock, so every entry's training
time and peak memory leave that one-off decoding out, and the results equal decoding per backbone.
"""

from __future__ import annotations

import csv
import gc
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
from .errors import DuplicateBackboneError, WeightsError, ZooError
from .runtime import pick_device
from .training import TrainConfig, data_config_for, shared_pixels, train
from .util import atomic_write_text
from .weights import is_local_path

COLUMNS = [  # leaderboard column → header
    ("rank", "#"), ("backbone", "backbone"), ("strategy", "strategy"), ("val_acc", "top-1"),
    ("val_top5", "top-5"), ("val_loss", "val loss"), ("total_params", "params"),
    ("trainable_params", "trainable"), ("train_seconds", "train s"), ("infer_images_per_s", "infer img/s"),
    ("peak_mem_mb", "peak MB"), ("weights", "weights"), ("status", "status"), ("run_dir", "run dir"),
]
RANDOM_INIT = "RANDOM INIT"  # the weights label of an entry that ran without pretrained weights
_NOT_PER_ENTRY = ("backbone", "data", "run_name", "out_dir", "progress")  # compare sets these itself


@dataclass
class Entry:
    """One backbone × strategy result (or failure)."""

    backbone: str
    strategy: str
    status: str = "pending"  # ok | reused | failed
    weights: str = ""  # "pretrained", RANDOM_INIT, or a file/tag
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
        rows = self.rows()
        cols = [c for c in COLUMNS if (c[0] != "run_dir" or markdown)
                and (c[0] != "val_top5" or any(r.get("val_top5") is not None for r in rows))]
        cells = [[h for _, h in cols]] + [[_fmt(k, r.get(k)) for k, _ in cols] for r in rows]
        if markdown:
            lines = ["| " + " | ".join(c) + " |" for c in cells]
            lines.insert(1, "|" + "|".join("---" for _ in cols) + "|")
        else:
            widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
            lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
            lines.insert(1, "  ".join("-" * w for w in widths))
        random = [e.label for e in self.entries if e.weights == RANDOM_INIT and e.status in ("ok", "reused")]
        if random:
            lines += ["", f"{RANDOM_INIT}: {', '.join(random)} ran without pretrained weights; their numbers say "
                      "little about the pretrained backbone."]
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

    @staticmethod
    def _reset_hwm() -> bool:
        """Reset the kernel's peak-RSS mark of this process (Linux ≥ 4.0); False where unsupported."""
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return PeakMemory._hwm_mb() is not None
        except OSError:
            return False

    @staticmethod
    def _hwm_mb() -> float | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except (OSError, ValueError):
            pass
        return None

    def __enter__(self) -> PeakMemory:
        gc.collect()  # the previous entry's garbage is not this entry's memory
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._exact = self._reset_hwm()  # exact kernel peak; else sample the RSS every 50 ms
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
            hwm = self._hwm_mb() if self._exact else None
            if hwm is not None:
                self.peak_mb = max(self.peak_mb, hwm)


@torch.no_grad()
def inference_speed(run_dir: Path, device: torch.device, batch_size: int = 32, iters: int = 3) -> float:
    """Images/s of the trained model's eval forward pass on one batch at its input size (median of
    ``iters`` timed passes after a warm-up, so a background hiccup does not decide the number)."""
    from .inference import load

    clf = load(run_dir, device=device)
    h, w = clf.data_config.image_size
    x = torch.randn(batch_size, 3, h, w, device=device).contiguous(memory_format=torch.channels_last)
    clf.model.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        clf(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            clf(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
    return batch_size / sorted(times)[len(times) // 2]


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
            try:
                registry.get_adapter(item)  # unknown names fail here, with close matches
            except DuplicateBackboneError:
                pass  # several plugins register it: its entries are recorded as failed, the rest run
            out.append(item)
    if family and not items:
        out = registry.list_backbones(family=family)
        if not out:
            raise ZooError(f"family {family!r} has no backbones; known: {', '.join(registry.families())}")
    if not out:
        raise ZooError("no backbones to compare: name some, use a pattern like 'resnet*', or --family")
    return list(dict.fromkeys(out))


def _strategy_names(strategies: Sequence[str] | str | None, strategy: str | None) -> list[str]:
    """Canonical, de-duplicated strategy names; unknown ones fail before any training."""
    from .strategies import get_strategy

    if strategies is not None and strategy is not None:
        raise ZooError("pass either strategies=[...] or strategy=..., not both")
    items = [strategies] if isinstance(strategies, str) else list(strategies or [])
    if strategy is not None:
        items = [strategy]
    names = [get_strategy(s).name for s in items or ["feature-extraction"]]
    return list(dict.fromkeys(names))


def _signature(backbone: str, strategy: str, fingerprint: str, cfg: TrainConfig) -> str:
    d = asdict(cfg)
    for k in ("progress", "out_dir", "run_name", "num_workers", "backbone", "strategy", "data", "share_decoding",
              "log", "log_dir"):
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


def compare(backbones: Sequence[str] | str | None, data: Any, *, strategies: Sequence[str] | str | None = None,
            family: str | None = None, out_dir: str | os.PathLike = "zoo-compare", fallback_random: bool = False,
            rerun: bool = False, merge: bool = False, progress: bool = True, max_entries: int | None = 64,
            **train_overrides: Any) -> Leaderboard:
    """Run every backbone × strategy on the same data and write the leaderboard into ``out_dir``.

    :param strategies: strategy names (default ``["feature-extraction"]``); ``strategy="finetune"`` also works.
    :param fallback_random: when pretrained weights are unavailable, run that entry from random init
        (marked "RANDOM INIT" in the output and leaderboard) instead of recording a failure. A local
        weights file that is missing or does not fit is always a failure.
    :param rerun: ignore finished entries and run everything again.
    :param merge: also list finished entries already in ``out_dir`` from earlier calls (other backbones,
        strategies or budgets), so one folder accumulates one leaderboard.
    :param max_entries: refuse (before touching any data) to run more backbone × strategy entries than
        this — a bare ``family="timm"`` is over a thousand backbones; None lifts the limit.
    :param train_overrides: any :class:`zoo_core.TrainConfig` field (epochs, image_size, lr, …).
        ``share_decoding`` defaults to True here: images are decoded once per distinct input size.
    """
    unknown = set(train_overrides) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ZooError(f"unknown training option(s) for compare: {', '.join(sorted(unknown))}")
    fixed = sorted(set(train_overrides) & set(_NOT_PER_ENTRY))
    if fixed:
        raise ZooError(f"compare sets {', '.join(fixed)} itself for every entry; pass the backbones, data and "
                       "out_dir as compare's own arguments")
    strategies = _strategy_names(strategies, train_overrides.pop("strategy", None))
    names = expand_backbones(backbones, family)
    n_entries = len(names) * len(strategies)
    if max_entries is not None and n_entries > max_entries:
        what = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
        raise ZooError(f"compare would run {n_entries:,} entries ({len(names):,} backbones × {len(strategies)} "
                       f"strategies: {what}), more than max_entries={max_entries}; narrow it with a pattern "
                       "(e.g. 'timm/resnet*') or raise the limit (--max-entries N, or 0 for no limit)")
    base = TrainConfig(**{"share_decoding": True, **train_overrides})
    base.data = os.fspath(data) if isinstance(data, (str, os.PathLike)) else ""
    out = Path(out_dir)
    split = zdata.load_data(data, val_fraction=base.val_fraction, seed=base.seed, download=base.download,
                            data_root=base.data_root, progress=progress)
    base.data = base.data or split.source  # recorded in each run's config.json (``zoo train --resume`` reads it)
    out.mkdir(parents=True, exist_ok=True)
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


_TRAINED_HERE: set[str] = set()  # entry.json files this process wrote by training (not reusing) the entry


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
                             "weights": weights,  # TensorBoard: one run per entry under one log dir
                             "log_dir": (base.log_dir or str(out / "tensorboard")) if base.log else None})
        sig = _signature(entry.backbone, entry.strategy, split.fingerprint, cfg)
        if not rerun and _reuse(entry, marker, sig):
            _TRAINED_HERE.discard(str(marker.resolve()))
            say(f"zoo compare: {entry.label}: reusing finished run {run_dir}")
            return
        say(f"zoo compare: {entry.label}: training{' from ' + RANDOM_INIT if weights is None else ''} …")
        entry.weights = RANDOM_INIT if weights is None else ("pretrained" if weights == "DEFAULT" else str(weights))
        old_marker = marker.read_text() if marker.is_file() else None
        marker.unlink(missing_ok=True)  # the run directory is being rewritten: never reuse it half-way
        (run_dir / "error.txt").unlink(missing_ok=True)
        try:
            _decode_once(cfg, split, progress)
            with PeakMemory(device) as mem:
                train(config=cfg, data=split)
            entry.peak_mem_mb = round(mem.peak_mb, 1)
            entry.infer_images_per_s = round(inference_speed(run_dir, device), 1)
            _from_summary(entry, run_dir)
            entry.status = "ok"
            atomic_write_text(marker, json.dumps({
                "signature": sig, "backbone": entry.backbone, "strategy": entry.strategy, "weights": entry.weights,
                "infer_images_per_s": entry.infer_images_per_s, "peak_mem_mb": entry.peak_mem_mb}, indent=2))
            _TRAINED_HERE.add(str(marker.resolve()))
            return
        except WeightsError as exc:
            if fallback_random and weights is not None and not is_local_path(weights) and attempt == "asked":
                if old_marker is not None:  # the weights failed before the run directory was touched
                    atomic_write_text(marker, old_marker)
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


def _decode_once(cfg: TrainConfig, split: Any, progress: bool) -> None:
    """Fill the shared pixel cache for the splits this entry reads decoded (a hit after the first entry of
    its input size), so that no entry's training time or peak memory includes the one-off decoding."""
    if not cfg.share_decoding:
        return
    from .strategies import get_strategy

    adapter, _ = registry.get_adapter(cfg.backbone)
    data_cfg = data_config_for(adapter, cfg)
    augment = get_strategy(cfg.strategy).default_augment if cfg.augment is None else cfg.augment
    for name in ("val",) if augment else ("train", "val"):  # augmented training images are decoded per epoch
        shared_pixels(cfg, split, name, data_cfg, None, quiet=not progress)


def _reuse(entry: Entry, marker: Path, sig: str) -> bool:
    """Fill ``entry`` from a finished run with signature ``sig``; False when there is none (or it is broken)."""
    try:
        done = json.loads(marker.read_text())
        if done.get("signature") != sig:
            return False
        entry.weights = done["weights"]
        entry.infer_images_per_s, entry.peak_mem_mb = done["infer_images_per_s"], done["peak_mem_mb"]
        _from_summary(entry, marker.parent)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    entry.status = "reused"
    return True


def _earlier_entries(out: Path, seen: set[tuple[str, str]]) -> list[Entry]:
    """Finished entries of earlier compare calls into the same folder ("ok" if this process trained them)."""
    found = []
    for marker in sorted((out / "runs").glob("*/entry.json")):
        try:
            done = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        key = (done.get("backbone"), done.get("strategy"))
        if None in key or key in seen:
            continue
        e = Entry(key[0], key[1], run_dir=str(marker.parent))
        if _reuse(e, marker, done.get("signature")):
            if str(marker.resolve()) in _TRAINED_HERE:
                e.status = "ok"  # e.g. the demo's feature-extraction call, just before its fine-tuning call
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
    points = [{"label": e.label, "tag": i, "hollow": e.weights == RANDOM_INIT, "acc": e.val_acc,
               "speed": e.infer_images_per_s, "params": e.total_params} for i, e in enumerate(ok, 1)]
    plots.scatter(points, "speed", "acc", out / "accuracy_vs_speed.png", xlabel="inference images/s (log)",
                  ylabel="validation top-1", title="accuracy vs inference speed", logx=True)
    plots.scatter(points, "params", "acc", out / "accuracy_vs_params.png", xlabel="parameters (log)",
                  ylabel="validation top-1", title="accuracy vs model size", logx=True)
    plots.curves_overlay({e.label: e.history for e in ok}, out / "learning_curves.png")
