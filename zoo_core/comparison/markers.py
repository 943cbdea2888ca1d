"""The marker of a finished entry, ``<out>/runs/<name>/entry.json``: what makes a finished run reusable.

A marker is written (atomically) only once its entry trained and was measured, and removed before the
run directory is rewritten, so a half-done run is never reused. It holds the entry's *signature* — a
digest of backbone, strategy, the data split's fingerprint and every training option that changes the
result — the weights label and the measurements (inference speed, peak memory). A later compare call
whose signature matches reads the results back from the run directory instead of training again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from ..training import TrainConfig
from ..training.config import OPTIONS
from ..util import atomic_write_text
from .leaderboard import Entry

MARKER = "entry.json"
_NOT_SIGNED = tuple(name for name, o in OPTIONS.items() if not o.signed)  # they do not change an entry's result


def signature(backbone: str, strategy: str, fingerprint: str, cfg: TrainConfig) -> str:
    """Digest of what decides an entry's result (not where it is written or how it is shown)."""
    d = asdict(cfg)
    for k in _NOT_SIGNED:
        d.pop(k, None)
    blob = json.dumps([backbone, strategy, fingerprint, d], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fill_from_run(entry: Entry, run_dir: Path) -> None:
    """The entry's metrics, sizes, time and history from the run's ``summary.json`` and ``metrics.jsonl`` (and,
    for ``--strategy auto``, its choice of stages as a note from ``config.json``)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    m = summary["metrics"]
    entry.val_acc, entry.val_top5, entry.val_loss = m.get("val_acc"), m.get("val_top5"), m.get("val_loss")
    entry.total_params, entry.trainable_params = summary["total_params"], summary["trainable_params"]
    entry.train_seconds = summary["train_seconds"]
    entry.history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    if entry.strategy != "auto":
        return
    chosen = (json.loads((run_dir / "config.json").read_text()).get("surgical") or {}).get("chosen")
    if chosen:  # --strategy auto: which stages its trials chose
        entry.add_note(f"auto chose {chosen['name']} (stages {', '.join(map(str, chosen['stages']))})")


def write_marker(entry: Entry, sig: str) -> Path:
    """Mark ``entry`` (trained and measured) finished with signature ``sig``; returns the marker's path."""
    marker = Path(entry.run_dir) / MARKER
    atomic_write_text(marker, json.dumps({
        "signature": sig, "backbone": entry.backbone, "strategy": entry.strategy, "weights": entry.weights,
        "infer_images_per_s": entry.infer_images_per_s, "peak_mem_mb": entry.peak_mem_mb}, indent=2))
    return marker


def reuse(entry: Entry, sig: str | None) -> bool:
    """Fill ``entry`` from its finished run when the marker's signature is ``sig``; False when there is
    none (or it is broken)."""
    marker = Path(entry.run_dir) / MARKER
    try:
        done = json.loads(marker.read_text())
        if done.get("signature") != sig:
            return False
        entry.weights = done["weights"]
        entry.infer_images_per_s, entry.peak_mem_mb = done["infer_images_per_s"], done["peak_mem_mb"]
        fill_from_run(entry, marker.parent)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    entry.status = "reused"
    return True


def earlier_entries(out: Path, seen: set[tuple[str, str]], trained: set[str]) -> list[Entry]:
    """Finished entries that earlier compare calls left in ``out`` (other than the ``seen`` backbone ×
    strategy pairs): "ok" when their marker is in ``trained`` (resolved paths), else "reused"."""
    found = []
    for marker in sorted((out / "runs").glob(f"*/{MARKER}")):
        try:
            done = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        key = (done.get("backbone"), done.get("strategy"))
        if None in key or key in seen:
            continue
        e = Entry(key[0], key[1], run_dir=str(marker.parent))
        if reuse(e, done.get("signature")):
            if str(marker.resolve()) in trained:
                e.status = "ok"  # e.g. the demo's feature-extraction call, just before its fine-tuning call
            found.append(e)
    return found
