"""The leaderboard of one compare call: :class:`Entry` (one backbone × strategy result), :class:`Leaderboard`
(ranking, rows, the terminal and Markdown tables) and :func:`write_outputs` (``leaderboard.md``/``.csv``/
``.json`` and the plots).

Ranking is by validation top-1, then validation loss; failed entries come last. The statistics columns
(interval, McNemar p against #1, ties) are filled in by :mod:`.significance`, the fold columns by
:mod:`.folds`; this module only shows them.

Seams: the plots are drawn through the module (``plots.scatter``, ``plots.curves_overlay``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backbones.weights import RANDOM_INIT
from ..outputs import html_report, plots
from ..outputs.tables import leaderboard_cell
from ..stats import TIE_ALPHA, baseline_note
from ..training.report import probe_start
from ..util import atomic_write_text, csv_text

COLUMNS = [  # leaderboard table column → header
    ("rank", "#"), ("backbone", "backbone"), ("strategy", "strategy"), ("val_acc", "top-1"),
    ("vs_1", "vs #1"), ("folds", "folds top-1"), ("val_top5", "top-5"), ("val_loss", "val loss"),
    ("total_params", "params"), ("trainable_params", "trainable"), ("train_seconds", "train s"),
    ("infer_images_per_s", "infer img/s"), ("peak_mem_mb", "peak MB"), ("weights", "weights"),
    ("status", "status"), ("run_dir", "run dir"),
]
RESULT_FIELDS = ("backbone", "strategy", "val_acc", "val_top5", "val_loss", "total_params", "trainable_params",
                 "train_seconds", "infer_images_per_s", "peak_mem_mb", "weights", "status", "run_dir")
STAT_FIELDS = ("val_images", "val_correct", "top1_low", "top1_high", "p_vs_1", "only_1_right", "only_this_right",
               "tied_with_1", "stats_note")  # from the runs' val_predictions.csv (see .significance)
FOLD_FIELDS = ("folds_k", "folds_mean", "folds_std", "folds_top1")  # --folds K (see .folds)
FINISHED = ("ok", "reused")  # statuses of an entry with results


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
    # on the validation images (val_predictions.csv): top-1 count, its 95 % Wilson interval, McNemar vs #1
    val_images: int | None = None
    val_correct: int | None = None
    top1_low: float | None = None
    top1_high: float | None = None
    p_vs_1: float | None = None  # exact McNemar p-value against #1 (None for #1 itself)
    only_1_right: int | None = None  # images #1 got right and this entry wrong
    only_this_right: int | None = None  # images this entry got right and #1 wrong
    tied_with_1: bool | None = None  # p_vs_1 >= TIE_ALPHA
    stats_note: str | None = None  # why a statistic is missing
    # --folds K: top-1 of the converged head fit on each of K stratified folds of train+val
    folds_k: int | None = None
    folds_mean: float | None = None
    folds_std: float | None = None
    folds_top1: list[float] | None = None
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)
    config: Any = field(default=None, repr=False, compare=False)  # the TrainConfig this call ran it with

    @property
    def label(self) -> str:
        """``backbone [strategy]``."""
        return f"{self.backbone} [{self.strategy}]"

    def add_note(self, text: str) -> None:
        """Add ``text`` to the entry's ``stats_note`` (notes are joined with "; ")."""
        self.stats_note = f"{self.stats_note}; {text}" if self.stats_note else text

    @property
    def finished(self) -> bool:
        """True when the entry has results (trained now or reused)."""
        return self.status in FINISHED


def ranked(entries: list[Entry]) -> list[Entry]:
    """Best first: by top-1, then validation loss; failures last."""
    return sorted(entries, key=lambda e: (not e.finished, -(e.val_acc or 0), e.val_loss or 0))


@dataclass
class Leaderboard:
    """All entries, best first, and where the outputs were written."""

    entries: list[Entry]
    out_dir: Path
    selection: dict[str, Any] | None = None  # compare(select=K): what was ranked, kept and fine-tuned
    majority_baseline: float | None = None  # val top-1 of always predicting the most frequent training class

    def rows(self) -> list[dict[str, Any]]:
        """Leaderboard rows (dicts: rank, results, statistics, folds, error), in leaderboard order."""
        rows = []
        for i, e in enumerate(self.entries, 1):
            d: dict[str, Any] = {"rank": i if e.finished else "-"}
            d.update({k: getattr(e, k) for k in (*RESULT_FIELDS, *STAT_FIELDS, *FOLD_FIELDS)})
            d["error"] = e.error
            d["run_dir"] = self.stored_run_dir(e)
            rows.append(d)
        return rows

    def stored_run_dir(self, entry: Entry) -> str:
        """``entry.run_dir`` as the leaderboard files store it: relative to the compare folder (``runs/<name>``),
        so a moved or copied folder still finds its own runs (:func:`zoo_core.outputs.html_report.resolve_run_dir`)."""
        if not entry.run_dir:
            return ""
        try:
            return Path(os.path.relpath(Path(entry.run_dir).resolve(), self.out_dir.resolve())).as_posix()
        except ValueError:  # another drive on Windows: keep it as it is
            return entry.run_dir

    def table(self, markdown: bool = False) -> str:
        """The leaderboard as an aligned text table (or Markdown), with the notes that explain it."""
        rows = self.rows()
        shown = {"run_dir": markdown, "val_top5": _any(rows, "val_top5"), "vs_1": _any(rows, "p_vs_1"),
                 "folds": _any(rows, "folds_mean")}
        cols = [c for c in COLUMNS if shown.get(c[0], True)]
        cells = [[h for _, h in cols]] + [[leaderboard_cell(k, r) for k, _ in cols] for r in rows]
        if markdown:
            lines = ["| " + " | ".join(c) + " |" for c in cells]
            lines.insert(1, "|" + "|".join("---" for _ in cols) + "|")
        else:
            widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
            lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
            lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines + self._notes(rows))

    def _notes(self, rows: list[dict[str, Any]]) -> list[str]:
        """The lines under the table: how to read the statistics, random-init entries, notes, failures."""
        notes = [n for n in [baseline_note(self.majority_baseline, "the validation images")] if n]
        n = next((r["val_images"] for r in rows if r["val_images"]), None)
        if n:
            notes.append(f"top-1 (low-high): 95 % Wilson interval on the {n} validation images. vs #1: exact "
                         f"McNemar test against #1 on the same images; \"tied\" when p >= {TIE_ALPHA:g} (these "
                         "images cannot tell the entry from #1).")
        k = next((r["folds_k"] for r in rows if r["folds_k"]), None)
        if k:
            notes.append(f"folds top-1: mean ± std of the converged head fit over {k} stratified folds of "
                         "train+val, on the same cached features; the single-split top-1 stays the ranking.")
        random = [e.label for e in self.entries if e.weights == RANDOM_INIT and e.finished]
        if random:
            notes.append(f"{RANDOM_INIT}: {', '.join(random)} ran without pretrained weights; their numbers say "
                         "little about the pretrained backbone.")
        sel = self.selection
        if sel:
            notes.append(f"--select {sel['k']}: {len(sel['ranked'])} backbone(s) ranked by {sel['score']} without "
                         f"training ({sel['ranking']}); feature extraction on the best {len(sel['feature_extraction'])}"
                         f", {' and '.join(sel['strategies'])} on the best {len(sel['fine_tuned'])} of those by "
                         "top-1; the others were never trained.")
        notes += [f"Note: {e.label}: {e.stats_note}" for e in self.entries if e.stats_note]
        errors = [f"- {e.label}: {e.error}" for e in self.entries if e.error]
        return ([""] + notes if notes else []) + (["", "Failed entries:"] + errors if errors else [])

    def __str__(self) -> str:
        return self.table()


def _any(rows: list[dict[str, Any]], key: str) -> bool:
    return any(r.get(key) is not None for r in rows)


def curve(entry: Entry) -> list[dict[str, Any]]:
    """``entry.history`` for the learning curves, with an LP-FT run's probe (its ``config.json``) as epoch 0:
    where fine-tuning started, so a curve that never rises above it shows that it did not pay."""
    if not entry.run_dir:
        return list(entry.history)
    try:
        record = json.loads((Path(entry.run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        record = {}
    return (probe_start(record) if isinstance(record, dict) else []) + list(entry.history)


def write_outputs(board: Leaderboard, split: Any) -> None:
    """``leaderboard.md``, ``.csv`` (lists space-separated), ``.json``, the plots and ``report.html``, into ``board.out_dir``."""
    out = board.out_dir
    rows = board.rows()
    atomic_write_text(out / "leaderboard.md", "# backbone-zoo leaderboard\n\n"
                      f"Data: {split.source} — {split.summary()}\n\n" + board.table(markdown=True) + "\n")
    atomic_write_text(out / "leaderboard.csv", csv_text(
        [{k: " ".join(map(str, v)) if isinstance(v, list) else v for k, v in r.items()} for r in rows],
        list(rows[0]) if rows else ["backbone"]))
    atomic_write_text(out / "leaderboard.json", json.dumps(
        {"data": split.source, "classes": split.classes, "tie_alpha": TIE_ALPHA, "selection": board.selection,
         "majority_baseline": board.majority_baseline, "entries": rows},
        indent=2, default=str) + "\n")
    ok = [e for e in board.entries if e.finished]
    points = [{"label": e.label, "tag": i, "hollow": e.weights == RANDOM_INIT, "acc": e.val_acc,
               "acc_low": e.top1_low, "acc_high": e.top1_high, "speed": e.infer_images_per_s,
               "params": e.total_params} for i, e in enumerate(ok, 1)]
    interval = ("acc_low", "acc_high")
    plots.scatter(points, "speed", "acc", out / "accuracy_vs_speed.png", xlabel="inference images/s (log)",
                  ylabel="validation top-1 (95 % interval)", title="accuracy vs inference speed", logx=True,
                  yerr=interval)
    plots.scatter(points, "params", "acc", out / "accuracy_vs_params.png", xlabel="parameters (log)",
                  ylabel="validation top-1 (95 % interval)", title="accuracy vs model size", logx=True,
                  yerr=interval)
    plots.curves_overlay({e.label: curve(e) for e in ok}, out / "learning_curves.png")
    html_report.write_report(out)  # report.html: the files above and the run directories, in one page
