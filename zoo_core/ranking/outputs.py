"""The files of a ranking in its output folder: ``ranking.md``, ``ranking.csv``, ``ranking.json`` and the plot
``score_vs_speed.png``, and ``report.html`` (every write atomic)."""

from __future__ import annotations

import json

from ..backbones.weights import RANDOM_INIT
from ..outputs import html_report, plots
from ..util import atomic_write_text, csv_text
from .results import FIELDS, SCORE_HEADERS, Ranking

PLOT = "score_vs_speed.png"  # the plot: primary score vs extraction images/s, points numbered by rank


def write_outputs(ranking: Ranking) -> None:
    """Write the ranking's table, rows and plot into ``ranking.out_dir``."""
    out, rows = ranking.out_dir, ranking.rows()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "ranking.md", f"# backbone-zoo ranking by {SCORE_HEADERS[ranking.score]}\n\n"
                      f"Data: {ranking.data} — {ranking.summary}\n\n" + ranking.table(markdown=True) + "\n")
    atomic_write_text(out / "ranking.csv", csv_text(
        ({**r, "probe_folds": " ".join(f"{a:.4f}" for a in r["probe_folds"])} for r in rows), list(FIELDS)))
    atomic_write_text(out / "ranking.json", json.dumps({
        "data": ranking.data, "summary": ranking.summary, "score": ranking.score, "folds": ranking.folds,
        "budget": ranking.budget, "majority_baseline": ranking.majority_baseline, "entries": rows}, indent=2, default=str) + "\n")
    points = [{"label": e.backbone, "tag": i, "hollow": e.weights == RANDOM_INIT, "score": e.score(ranking.score)[0],
               "speed": e.extract_images_per_s} for i, e in enumerate(ranking.entries, 1) if e.ok]
    plots.scatter(points, "speed", "score", out / PLOT, xlabel="feature extraction images/s (log)",
                  ylabel=SCORE_HEADERS[ranking.score], title=f"{SCORE_HEADERS[ranking.score]} vs extraction speed",
                  logx=True)
    html_report.write_report(out)  # report.html: the table and the plot in one page
