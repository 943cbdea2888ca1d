"""What compare measures around one entry besides its accuracy: peak memory and inference speed.

:class:`PeakMemory` spans the whole entry — training *and* the inference-speed pass — and never resets
the process's own high-water mark:

- **CPU**: a thread samples the resident set size (``/proc/self/statm``) every :data:`SAMPLE_S` seconds
  while the block runs; the kernel's peak-RSS mark (``VmHWM``) is read before and after but not reset.
  The mark only rises, so when it rose during the block the block's peak *is* the new mark (exact, up
  to the kernel updating the mark lazily, which the samples cover); when it did not, the block stayed
  below an earlier peak of the process and the sampled maximum is the answer (it can miss a spike
  shorter than the sampling interval). Resetting the mark
  (``/proc/self/clear_refs``) would make every entry exact, but it also erases the process's own peak,
  which ``/usr/bin/time`` and job accounting then under-report — so compare never does.
- **GPU**: the CUDA caching allocator's peak since the block started (``torch.cuda.max_memory_allocated``
  after ``reset_peak_memory_stats``, torch's own counter; no OS accounting is touched).
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from ..inference import load

SAMPLE_S = 0.02  # RSS sampling interval of PeakMemory on CPU (seconds)


def rss_mb() -> float:
    """The process's resident set size now (MB); its peak so far where ``/proc`` is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def hwm_mb() -> float | None:
    """The kernel's peak-RSS mark of this process (``VmHWM``, MB); None where it is not available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


class PeakMemory:
    """Peak memory while the block runs (MB in ``peak_mb``): the CUDA allocator's peak on GPU, the process
    RSS on CPU (sampled, exact when the block raised the process's peak; ``exact`` says which)."""

    def __init__(self, device: torch.device, interval: float = SAMPLE_S) -> None:
        self.device, self.interval = device, interval
        self.peak_mb, self.exact = 0.0, False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm_before: float | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __enter__(self) -> PeakMemory:
        gc.collect()  # the previous entry's garbage is not this entry's memory
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._hwm_before = hwm_mb()
        self.peak_mb = rss_mb()
        self._thread = threading.Thread(target=self._sample, name="zoo-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak_mb, self.exact = torch.cuda.max_memory_allocated(self.device) / 2**20, True
            return
        assert self._thread is not None
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())
        after = hwm_mb()
        if after is not None and self._hwm_before is not None and after > self._hwm_before:
            self.peak_mb, self.exact = max(self.peak_mb, after), True  # the process peak happened in here


@torch.no_grad()
def inference_speed(run_dir: Path, device: torch.device, batch_size: int = 32, iters: int = 3) -> float:
    """Images/s of the trained model's eval forward pass on one batch at its input size (median of
    ``iters`` timed passes after a warm-up, so a background hiccup does not decide the number)."""
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
