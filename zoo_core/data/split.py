"""What every data source produces: a :class:`DataSplit`, its stratified seeded split and its fingerprint.

A split's ``train``/``val`` datasets yield raw ``(PIL.Image in RGB, int label)`` items; preprocessing is
separate (:mod:`.transforms`, :mod:`.augment`). Something left out of the data (an unreadable file, an
empty class folder) is listed in :attr:`DataSplit.skipped` as ``(path, reason)``, and a class lost that way
also raises a :class:`DataWarning`; training goes on.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from torch.utils.data import Dataset

from .. import logs
from ..errors import DataError
from ..util import digest

PROGRESS_MIN = 1000
"""Scans and label reads of at least this many items show a progress bar."""


class DataWarning(UserWarning):
    """Something in the data was left out (e.g. an empty class folder); training goes on."""


@dataclass
class DataSplit:
    """A train/val (and optional test) split: datasets of raw ``(PIL RGB image, int label)`` items plus provenance."""

    train: Dataset
    val: Dataset
    classes: list[str]
    source: str
    fingerprint: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    test: Dataset | None = None  # held-out test items: scored at the end, never used to choose anything
    test_fingerprint: str = ""  # the test items' own fingerprint (``fingerprint`` covers train and val only)

    @property
    def num_classes(self) -> int:
        """``len(classes)``."""
        return len(self.classes)

    @property
    def problems(self) -> list[tuple[str, str]]:
        """The skipped entries that deserve attention: everything but hidden/system files and folders."""
        return [(path, reason) for path, reason in self.skipped if not reason.startswith("hidden")]

    def summary(self) -> str:
        """One line: ``"N train / M val [/ T test] images, K classes (S skipped)"``; S excludes hidden files."""
        test = "" if self.test is None else f" / {len(self.test)} test"
        return (f"{len(self.train)} train / {len(self.val)} val{test} images, {len(self.classes)} classes "
                f"({len(self.problems)} skipped)")


def _n_val(n: int, val_fraction: float) -> int:
    if val_fraction <= 0 or n < 2:
        return 0
    return min(max(int(math.floor(val_fraction * n + 0.5)), 1), n - 1)


def stratified_split(labels: Sequence[int], keys: Sequence[str], val_fraction: float,
                     seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)`` of ``labels``, both sorted, deterministic in every process.

    Per class, its indices are shuffled by ``random.Random(f"{seed}:{keys[label]}")`` (keyed by the class
    name, so adding a class leaves the other classes' splits alone) and the first
    ``round_half_up(val_fraction * n)`` go to val: at least 1 when the class has ``n >= 2`` items, always at
    least 1 left in train; ``val_fraction=0`` gives no val.
    """
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    train: list[int] = []
    val: list[int] = []
    for y, idx in sorted(by_class.items()):
        random.Random(f"{seed}:{keys[y]}").shuffle(idx)
        k = _n_val(len(idx), val_fraction)
        val += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(val)


def fingerprint(header: dict[str, Any], rows: Iterable[str | bytes] = ()) -> str:
    """A split's fingerprint: a 16-hex-digit SHA-256 prefix of ``header`` (the source's kind, parameters and
    classes) and ``rows`` (what the source hashes of its items), the same in every process."""
    return digest({"v": 2, **header}, rows, 16)  # v2: folders hash file contents, not mtimes


def check_fraction(val_fraction: float) -> None:
    """A one-line :class:`DataError` unless ``0 <= val_fraction < 1``."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction!r}")


def progress_bar(total: int, desc: str, unit: str, enabled: bool) -> Any:
    """A tqdm bar on stderr for a scan or label read, shown only when ``enabled`` and ``total`` reaches
    :data:`PROGRESS_MIN`."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not logs.progress(enabled) or total < PROGRESS_MIN)
