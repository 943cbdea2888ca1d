"""Plain-text tables and key/value blocks for the CLI, and the cells of the leaderboard and ranking tables
(shared by their terminal, Markdown and HTML forms; no dependencies, no colours)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

Column = str | tuple[str, str]
"""A column: a row key (its header is the key upper-cased) or a ``(key, header)`` pair."""


def format_value(value: Any) -> str:
    """One cell: ``None`` → empty, lists joined with ``", "``, floats to 4 significant digits,
    newlines folded into spaces."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, set)):
        return ", ".join(format_value(v) for v in value)
    return " ".join(str(value).split())


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, rule: bool = True) -> str:
    """Render ``rows`` as an aligned text table with a header line (and a dashed rule under it).

    Numeric columns (every non-empty cell an ``int`` or ``float``) are right-aligned, the rest
    left-aligned; missing keys print empty. Returns the table without a trailing newline.

    >>> print(format_table([{"name": "resnet18", "params": 11689512}], ["name", ("params", "PARAMS")]))
    NAME        PARAMS
    --------  --------
    resnet18  11689512
    """
    cols = [(c, c.upper()) if isinstance(c, str) else c for c in columns]
    cells = [[format_value(row.get(key)) for key, _ in cols] for row in rows]
    numeric = [
        all(isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)
            for row in rows if row.get(key) is not None) and any(row.get(key) is not None for row in rows)
        for key, _ in cols
    ]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, (_, h) in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line([h for _, h in cols])]
    if rule:
        out.append(line(["-" * w for w in widths]))
    out += [line(r) for r in cells]
    return "\n".join(out)


def format_pairs(pairs: Sequence[tuple[str, Any]]) -> str:
    """Render ``(key, value)`` pairs as an aligned two-column block (``zoo info`` style)."""
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(width)}  {format_value(v)}".rstrip() for k, v in pairs)


def human_count(n: int) -> str:
    """``11689512`` → ``"11.7M"``; ``371240`` → ``"371.2K"``; small numbers unchanged."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def leaderboard_cell(key: str, row: Mapping[str, Any]) -> str:
    """One leaderboard cell of ``row`` (a ``Leaderboard.rows()`` dict; ``vs_1`` and ``folds`` are drawn from
    several fields)."""
    v = row.get(key)
    if key == "val_acc" and v is not None and row["top1_low"] is not None:
        return f"{v:.4f} ({row['top1_low']:.3f}-{row['top1_high']:.3f})"
    if key == "vs_1":
        if row["p_vs_1"] is None:
            return "-"
        return f"tied, {_p(row['p_vs_1'])}" if row["tied_with_1"] else _p(row["p_vs_1"])
    if key == "folds":
        return "-" if row["folds_mean"] is None else f"{row['folds_mean']:.4f} ± {row['folds_std']:.4f}"
    if v is None:
        return "-"
    if key in ("val_acc", "val_top5", "val_loss"):
        return f"{v:.4f}"
    if key in ("total_params", "trainable_params"):
        return f"{v / 1e6:.2f}M" if v >= 1e5 else f"{v:,}"
    if key in ("train_seconds", "infer_images_per_s", "peak_mem_mb"):
        return f"{v:.1f}"
    return str(v)


def ranking_cell(key: str, v: Any) -> str:
    """The ranking table's text for value ``v`` of column ``key``."""
    if v is None:
        return "-"
    if key in ("score", "spread", "logme", "logme_std", "probe_acc", "probe_std"):
        return f"{v:.4f}"
    if key in ("extract_images_per_s", "seconds"):
        return f"{v:.1f}"
    return str(v)


def stage_size_pairs(stage_sizes: Sequence[Any], head_params: int, total: int) -> list[tuple[str, str]]:
    """``zoo info`` lines for the stages (``StageSize`` items, input → output): each stage's parameters and
    what ``--trainable-stages k`` trains (head and the last k stages), as a count and a share of ``total``."""
    total = total or 1
    pairs = [("head params", f"{human_count(head_params)} params; --trainable-stages 0 trains "
                      f"{human_count(head_params)} ({head_params / total:.1%})")]
    for s in reversed(stage_sizes):
        pairs.append((f"stage {s.stage}", f"{human_count(s.params)} params; --trainable-stages {s.k} trains "
                                          f"{human_count(s.trained)} ({s.share:.1%})"))
    return pairs


def input_sizes_text(fixed: Sequence[int], multiple_of: int, min_size: int) -> str:
    """``zoo info``'s accepted input sizes: ``"224 px only"``, ``"multiples of 16 px"`` or ``"any"``."""
    if fixed:
        return " or ".join(str(f) for f in fixed) + " px only"
    if multiple_of > 1:
        return f"multiples of {multiple_of} px (from {max(min_size, multiple_of)})"
    return f"any (from {min_size} px)" if min_size > 1 else "any"
