"""Compare backbones × strategies side by side on the same data, split, seed and budget.

``compare(["resnet18", "vgg11", "timm/resnet18.a1_in1k"], "path/to/images")`` trains every entry with
:func:`zoo_core.train` (each backbone with its own preprocessing), then writes a leaderboard
(``leaderboard.md``/``.csv``/``.json``) and plots into ``out_dir``. A failing entry is recorded with its
error and the others go on; rerunning the same command reuses finished entries. Every leaderboard
carries statistics on the shared validation images: a 95 % interval per top-1, an exact McNemar test
of each entry against #1 and which entries are tied with #1; ``folds=K`` adds the top-1 of each
feature-extraction entry over K stratified folds.

Images are decoded, resized and cropped once per distinct preprocessing into the shared pixel cache
(``share_decoding``) before the entry that first needs them starts its clock, so every entry's training
time and peak memory leave that one-off decoding out, and the results equal decoding per backbone.

Modules, in import order:

- :mod:`.measure` — :class:`PeakMemory` (never resets the process's peak mark), :func:`inference_speed`;
- :mod:`.leaderboard` — :class:`Entry`, :class:`Leaderboard` (rows, tables), :func:`write_outputs`;
- :mod:`.significance` — intervals, McNemar against #1 and ties, from each run's ``val_predictions.csv``;
- :mod:`.folds` — ``folds=K`` on cached features (head fits only);
- :mod:`.markers` — ``entry.json``: the signature that makes a finished run reusable;
- :mod:`.plan` — :func:`make_plan`: arguments checked and expanded before any work (:class:`Plan`);
- :mod:`.run` — :func:`compare` itself, :class:`EntryRunner` (one entry), :class:`Session`.
"""

from __future__ import annotations

from .leaderboard import COLUMNS, RANDOM_INIT, Entry, Leaderboard, write_outputs
from .measure import PeakMemory, inference_speed
from .plan import Plan, make_plan
from .run import EntryRunner, Session, compare

__all__ = ["COLUMNS", "RANDOM_INIT", "Entry", "EntryRunner", "Leaderboard", "PeakMemory", "Plan", "Session",
           "compare", "inference_speed", "make_plan", "write_outputs"]
