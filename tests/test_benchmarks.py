"""The benchmarks' own logic: the CUDA pass benchmark's CPU dry run and no-GPU message, time-to-accuracy arithmetic,
and what the scripts share (benchmarks/_common.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cuda_pass_vs_timm.py"


def test_cuda_pass_vs_timm_dry_run_on_cpu_prints_both_rows_and_a_verdict(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--model", "timm/test_efficientnet",
                           "--batch-size", "2", "--iters", "2", "--warmup", "1", "--repeats", "1",
                           "--image-size", "32", "--precision", "fp32", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    timm_row = next(ln for ln in lines if ln.startswith("timm benchmark.py-style inference"))
    pass_row = next(ln for ln in lines if ln.startswith("ours: ForwardPass fp32"))
    assert float(timm_row.split()[-2]) > 0 and float(pass_row.split()[-2]) > 0
    assert any(ln.startswith("ours: extract_features (4 images)") for ln in lines)
    assert any(ln.startswith(("[PASS] our pass", "[MISS] our pass")) for ln in lines)
    assert "DRY RUN" in proc.stdout and '"ratio_pass"' in out.read_text()


def test_cuda_pass_vs_timm_without_a_gpu_says_so_in_one_line():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "no CUDA GPU here" in proc.stderr and "--cpu" in proc.stderr


def _load(name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The benchmark script ``benchmarks/<name>.py`` as a module (its folder on sys.path, as when run)."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location(name, SCRIPT.with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _plain(accs, seconds, target, optimizer="sgd"):
    hist = [{"epoch": i + 1, "val_acc": a, "cum_seconds": s} for i, (a, s) in enumerate(zip(accs, seconds))]
    hit = next(({"epoch": h["epoch"], "seconds": h["cum_seconds"]} for h in hist if h["val_acc"] >= target), None)
    return {"optimizer": optimizer, "lr": 1e-3, "history": hist, "reached": hit, "backbone_fingerprint": "x"}


def test_time_to_accuracy_is_the_first_epoch_at_target_or_a_lower_bound(monkeypatch):
    b = _load("transfer_vs_plain_loop", monkeypatch)
    ours = {"wall_s": 10.0}
    got = b.time_to_accuracy(_plain([0.5, 0.89, 0.95], [30, 60, 90], 0.89), ours)
    assert (got["reached"], got["epoch"], got["seconds"], got["ratio"]) == (True, 2, 60, 6.0)
    missed = b.time_to_accuracy(_plain([0.5, 0.6], [30, 60], 0.89), ours)
    assert not missed["reached"] and missed["ratio"] == 6.0 and missed["ratio_text"] == "> 6.0x"


def test_untimed_adam_only_stands_in_when_the_grid_never_reached_the_target(monkeypatch):
    b = _load("transfer_vs_plain_loop", monkeypatch)
    sgd = _plain([0.2, 0.2, 0.2], [30, 60, 90], 0.89)
    grid = {"chosen_lr": 1e-3, "per_lr": [{"lr": 1e-3, "val_acc": [0.4, 0.6, 0.63], "reached_epoch": None,
                                           "best_val_acc": 0.63}]}
    adam = b.untimed_adam(grid, sgd)
    assert adam["timed"] is False and [h["cum_seconds"] for h in adam["history"]] == [30, 60, 90]
    assert [h["val_acc"] for h in adam["history"]] == [0.4, 0.6, 0.63] and adam["reached"] is None
    grid["per_lr"][0].update(reached_epoch=3)
    assert b.untimed_adam(grid, sgd) is None  # reached: it must be timed for real
    grid["per_lr"][0].update(reached_epoch=None)
    assert b.untimed_adam(grid, _plain([0.9], [30], 0.89)) is None  # the SGD loop stopped earlier


def test_common_parser_options_json_and_reused_demo_folder(tmp_path, monkeypatch):
    common = _load("_common", monkeypatch)
    ap = common.parser("First line.\n\nMore.", images=8, repeats=2)
    common.add_out(ap)
    args = ap.parse_args(["--repeats", "5", "--out", str(tmp_path / "r.json")])
    assert ap.description == "First line." and (args.images, args.repeats) == (8, 5)
    assert args.out == tmp_path / "r.json"
    with pytest.raises(ValueError, match="'threads'"):
        common.parser(__doc__, threads=2)
    common.write_json(args.out, {"x": 1, "p": tmp_path})
    assert json.loads(args.out.read_text()) == {"x": 1, "p": str(tmp_path)} and not list(tmp_path.glob("*.tmp"))

    root = common.demo_folder(tmp_path / "demo", images=12, size=24, render_size=24, seed=0)
    pngs = sorted(root.rglob("*.png"))
    assert len(pngs) == 12 and len({p.parent.name for p in pngs}) == 6
    stamp = pngs[0].stat().st_mtime_ns
    common.demo_folder(root, images=12, size=24, render_size=24, seed=0)  # complete: reused, not redrawn
    assert pngs[0].stat().st_mtime_ns == stamp
    common.demo_folder(root, images=18, size=24, render_size=24, seed=0)  # other arguments: redrawn
    assert len(list(root.rglob("*.png"))) == 18
    (jpeg,) = common.demo_jpegs(tmp_path, 1, size=(40, 30))
    assert jpeg.read_bytes()[:2] == b"\xff\xd8"
