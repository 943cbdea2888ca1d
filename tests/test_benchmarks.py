"""The benchmark scripts' code paths that a CPU-only machine can run: the CUDA pass benchmark's dry run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
