"""One self-contained ``report.html`` built from what ``compare`` or ``rank`` already wrote into its folder.

A compare folder: ``leaderboard.json`` (rows with statistics, folds, the ``--select`` record), the plots
beside it, each entry's ``curves.png`` and ``confusion.png`` in its run directory, and ``rank/`` when
``--select`` ranked first. A rank folder: ``ranking.json`` and ``score_vs_speed.png``. Images are embedded
as ``data:`` URIs; there is no script, no stylesheet or font from elsewhere, nothing fetched: the file
opens offline and can be mailed on its own. All text is escaped (:func:`html.escape`) and the file is
written atomically. The module reads those files only; it imports nothing of ``comparison`` or ``ranking``
(the cells are formatted by :mod:`.tables`, as the terminal tables are).
"""

from __future__ import annotations

import base64
import os
from html import escape
from pathlib import Path
from typing import Any

from ..backbones.weights import RANDOM_INIT
from ..errors import ZooError
from ..records import read_leaderboard, read_ranking
from ..stats import baseline_note
from ..util import atomic_write_text
from .tables import leaderboard_cell, ranking_cell

REPORT = "report.html"
COMPARE_PLOTS = (("accuracy_vs_speed.png", "accuracy vs inference speed"),
                 ("accuracy_vs_params.png", "accuracy vs model size"),
                 ("learning_curves.png", "validation top-1 per epoch"))
RANK_PLOT = ("score_vs_speed.png", "score vs extraction speed")
RUN_PLOTS = (("curves.png", "learning curves"), ("confusion.png", "confusion matrix"))

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#eee}tr.tied td{background:#fff6d5}tr.failed td{color:#a00}
td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%;border:1px solid #ddd}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots figure{margin:0;max-width:48%}
.entry{border-top:1px solid #ccc;margin-top:1.5em}.note{color:#555;font-size:13px}"""


def write_report(folder: str | os.PathLike) -> Path:
    """(Re)build ``FOLDER/report.html`` from a compare folder (``leaderboard.json``) or a rank folder
    (``ranking.json``); returns its path."""
    folder = Path(folder)
    if (folder / "leaderboard.json").is_file():
        body = compare_body(folder)
        title = "backbone-zoo leaderboard"
    elif (folder / "ranking.json").is_file():
        title, body = "backbone-zoo ranking", rank_body(folder, level=1)
    else:
        raise ZooError(f"{folder} holds neither leaderboard.json nor ranking.json: give the --out folder of "
                       "a `zoo compare` or `zoo rank` run")
    path = folder / REPORT
    atomic_write_text(path, page(title, body))
    return path


def page(title: str, body: str) -> str:
    """A complete HTML document with the inline style sheet."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{_STYLE}</style></head>\n<body>\n<h1>{escape(title)}</h1>\n{body}\n</body></html>\n")


def image(path: Path, caption: str) -> str:
    """A ``<figure>`` with the PNG at ``path`` as a data URI, or a note when the file is missing."""
    if not path.is_file():
        return f"<p class=\"note\">{escape(caption)}: {escape(path.name)} is missing.</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{escape(caption)}\">"
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    """An HTML table of already formatted cells (escaped here); ``classes`` per row (``tied``, ``failed``)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f" class=\"{classes[i]}\"" if classes and classes[i] else ""
        cells = "".join(f"<td class=\"num\">{escape(c)}</td>" if _numeric(c) else f"<td>{escape(c)}</td>"
                        for c in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table class=\"leaderboard\"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _numeric(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell[:2] in ("p<", "p="))


COMPARE_KEYS = ("rank", "backbone", "strategy", "val_acc", "vs_1", "folds", "val_top5", "val_loss", "total_params",
                "trainable_params", "train_seconds", "infer_images_per_s", "peak_mem_mb", "weights", "status")
RANK_KEYS = ("rank", "backbone", "score", "spread", "logme", "logme_std", "probe_acc", "probe_std", "feature_dim",
             "images", "extract_images_per_s", "seconds", "weights", "status")


def compare_row(r: dict[str, Any]) -> list[str]:
    """The cells of one leaderboard row, as the terminal table formats them, and McNemar's discordant counts."""
    cells = [leaderboard_cell(k, r) for k in COMPARE_KEYS]
    if r.get("p_vs_1") is not None:
        cells[COMPARE_KEYS.index("vs_1")] += f" ({r.get('only_1_right')} vs {r.get('only_this_right')})"
    return cells


COMPARE_HEADERS = ["#", "backbone", "strategy", "top-1 (95 % interval)", "vs #1 (only #1 right vs only this)",
                   "folds top-1", "top-5", "val loss", "params", "trainable", "train s", "infer img/s", "peak MB",
                   "weights", "status"]


def compare_body(folder: Path) -> str:
    """Data, leaderboard table, its statistics notes, the plots, each entry's curves and confusion matrix."""
    board = read_leaderboard(folder)
    rows = board.get("entries", [])
    classes = ["failed" if r.get("status") == "failed" else "tied" if r.get("tied_with_1") else "" for r in rows]
    parts = [f"<p>Data: {escape(str(board.get('data')))} — {len(board.get('classes') or [])} classes: "
             f"{escape(', '.join(map(str, board.get('classes') or [])))}</p>",
             "<h2>Leaderboard</h2>", table(COMPARE_HEADERS, [compare_row(r) for r in rows], classes),
             _compare_notes(board, rows), "<h2>Plots</h2>",
             "<div class=\"plots\">" + "".join(image(folder / f, c) for f, c in COMPARE_PLOTS) + "</div>"]
    if (folder / "rank" / "ranking.json").is_file():
        parts += ["<h2>--select: the ranking before training</h2>", rank_body(folder / "rank", level=3)]
    parts += ["<h2>Entries</h2>"] + [_entry(folder, r) for r in rows]
    return "\n".join(parts)


def _compare_notes(board: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """How to read the statistics (Wilson, McNemar, ties, folds), the --select record, per-entry notes."""
    notes = [n for n in [baseline_note(board.get("majority_baseline"), "the validation images")] if n]
    n = next((r["val_images"] for r in rows if r.get("val_images")), None)
    alpha = board.get("tie_alpha", 0.05)
    if n:
        notes.append(f"top-1 (low-high): 95 % Wilson score interval on the {n} validation images. vs #1: exact "
                     f"McNemar test against #1 on the same images; rows marked tied (yellow) have p >= {alpha:g}: "
                     "these images cannot tell them from #1.")
    k = next((r["folds_k"] for r in rows if r.get("folds_k")), None)
    if k:
        spread = "; ".join(f"{r['backbone']} [{r['strategy']}]: " + ", ".join(f"{v:.3f}" for v in r["folds_top1"])
                           for r in rows if r.get("folds_top1"))
        notes.append(f"folds top-1: mean ± std of the converged head fit over {k} stratified folds of train+val "
                     f"(every fold: {spread}); the single-split top-1 stays the ranking.")
    random = [f"{r['backbone']} [{r['strategy']}]" for r in rows if r.get("weights") == RANDOM_INIT]
    if random:
        notes.append(f"{RANDOM_INIT}: {', '.join(random)} ran without pretrained weights.")
    sel = board.get("selection")
    if sel:
        notes.append(f"--select {sel.get('k')}: {len(sel.get('ranked', []))} backbone(s) ranked by "
                     f"{sel.get('score')} without training; feature extraction on "
                     f"{', '.join(sel.get('feature_extraction', []))}; {' and '.join(sel.get('strategies', []))} "
                     f"on {', '.join(sel.get('fine_tuned', []))}; the others were never trained.")
    notes += [f"{r['backbone']} [{r['strategy']}]: {r['stats_note']}" for r in rows if r.get("stats_note")]
    notes += [f"FAILED {r['backbone']} [{r['strategy']}]: {r['error']}" for r in rows if r.get("error")]
    return "".join(f"<p class=\"note\">{escape(t)}</p>" for t in notes)


def resolve_run_dir(folder: Path, run_dir: str) -> Path:
    """The run directory a compare folder's leaderboard names: under the folder's own ``runs/`` when it is
    there; else relative to the folder (how it is stored); else an older file's absolute path."""
    p = Path(run_dir)
    for candidate in (folder / "runs" / p.name, folder / p):
        if candidate.is_dir():
            return candidate
    return p if p.is_absolute() else folder / p


def _entry(folder: Path, r: dict[str, Any]) -> str:
    """One entry's section: its line of numbers and its curves and confusion matrix."""
    head = f"<h3>#{escape(str(r.get('rank', '-')))} {escape(r.get('backbone', ''))} [{escape(r.get('strategy', ''))}]</h3>"
    if r.get("status") == "failed" or not r.get("run_dir"):
        return f"<div class=\"entry\">{head}<p class=\"note\">{escape(str(r.get('error') or 'no run directory'))}</p></div>"
    run = resolve_run_dir(folder, r["run_dir"])
    figs = "".join(image(run / f, f"{r['backbone']} [{r['strategy']}]: {c}") for f, c in RUN_PLOTS)
    return (f"<div class=\"entry\">{head}<p class=\"note\">run directory: {escape(str(r['run_dir']))}</p>"
            f"<div class=\"plots\">{figs}</div></div>")


RANK_HEADERS = ["#", "backbone", "score", "±", "LogME", "±", "probe top-1", "±", "dim", "images", "extract img/s",
                "seconds", "weights", "status"]


def rank_body(folder: Path, level: int = 2) -> str:
    """A ranking's table (both scores with their spreads over the folds), notes and plot."""
    ranking = read_ranking(folder)
    rows = ranking.get("entries", [])
    cells = [[ranking_cell(k, r.get(k)) for k in RANK_KEYS] for r in rows]
    h = f"h{min(level + 1, 6)}"
    notes = [f"Data: {ranking.get('data')} — {ranking.get('summary')}. Ordered by {ranking.get('score')}; ± is "
             f"the standard deviation over the {ranking.get('folds')} folds."]
    notes += [n for n in [baseline_note(ranking.get("majority_baseline"), "the training images (probe top-1)")] if n]
    notes += [f"FAILED {r['backbone']}: {r['error']}" for r in rows if r.get("error")]
    return "\n".join([f"<{h}>Ranking</{h}>", table(RANK_HEADERS, cells,
                                                   ["failed" if r.get("status") == "failed" else "" for r in rows]),
                      "".join(f"<p class=\"note\">{escape(str(t))}</p>" for t in notes),
                      f"<div class=\"plots\">{image(folder / RANK_PLOT[0], RANK_PLOT[1])}</div>"])
