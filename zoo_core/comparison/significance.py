"""Statistics in every leaderboard, from each finished entry's ``val_predictions.csv``.

Every entry of one compare call is scored on the same validation images (same data, split and seed), so
the per-image results line up; rows are matched by their ``item`` (the image), never by position.

- **Interval**: the 95 % Wilson score interval of each top-1 over its validation images
  (:func:`zoo_core.stats.wilson_interval`).
- **Paired test**: the exact McNemar test of each entry against #1 on the same images
  (:func:`zoo_core.stats.mcnemar_exact`): only the images exactly one of the two gets right count.
- **Ties**: an entry whose p-value is at least :data:`zoo_core.stats.TIE_ALPHA` is *tied with #1*: these
  images cannot tell the two apart, whatever their top-1 says.

An entry whose images differ from #1's (an entry merged from another split, say) keeps its interval but
gets no paired test, and its ``stats_note`` says why; so does one without a readable predictions file.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..stats import TIE_ALPHA, mcnemar_exact, wilson_interval
from .leaderboard import Entry

PREDICTIONS = "val_predictions.csv"  # per validation image: index, item, target, pred, correct, …


def read_correct(run_dir: str | Path) -> dict[str, bool]:
    """Per validation image (its ``item``), whether the run got it right; ``ValueError`` naming the file
    when it is missing, unreadable or lists an image twice."""
    path = Path(run_dir) / PREDICTIONS
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        out: dict[str, bool] = {}
        for row in rows:
            item = row["item"]
            if item in out:
                raise ValueError(f"{path} lists image {item!r} twice")
            out[item] = row["correct"].strip() in ("1", "True", "true")
    except FileNotFoundError:
        raise ValueError(f"no {PREDICTIONS} in {run_dir} (a run older than this version): no statistics") from None
    except (OSError, KeyError, AttributeError, csv.Error) as exc:
        raise ValueError(f"{path} is unreadable ({type(exc).__name__}: {exc}): no statistics") from None
    return out


def annotate(entries: list[Entry]) -> None:
    """Fill in the statistics fields of the finished ``entries`` (best first: the first one is #1)."""
    done = [e for e in entries if e.finished]
    if not done:
        return
    correct: dict[int, dict[str, bool]] = {}
    for e in done:
        try:
            correct[id(e)] = read_correct(e.run_dir)
        except ValueError as exc:
            e.add_note(str(exc))
            continue
        e.val_images, e.val_correct = len(correct[id(e)]), sum(correct[id(e)].values())
        e.top1_low, e.top1_high = wilson_interval(e.val_correct, e.val_images)
        if e.val_acc is not None and e.val_images and abs(e.val_correct / e.val_images - e.val_acc) * e.val_images > 0.5:
            e.add_note(f"{PREDICTIONS} has {e.val_correct}/{e.val_images} right, not the top-1 {e.val_acc:.4f} "
                       "of summary.json (a changed file?); the interval is of the former")
    leader, lead = done[0], correct.get(id(done[0]))
    for e in done[1:]:
        mine = correct.get(id(e))
        if mine is None:
            continue
        if lead is None:
            e.add_note(f"#1 ({leader.label}) has no usable {PREDICTIONS}: no paired test")
        elif mine.keys() != lead.keys():
            e.add_note(f"its {len(mine)} validation images are not #1's {len(lead)} "
                       f"({len(mine.keys() ^ lead.keys())} differ): no paired test")
        else:
            items = sorted(lead)
            test = mcnemar_exact([lead[i] for i in items], [mine[i] for i in items])
            e.p_vs_1, e.only_1_right, e.only_this_right = test["p_value"], test["a_only"], test["b_only"]
            e.tied_with_1 = e.p_vs_1 >= TIE_ALPHA
