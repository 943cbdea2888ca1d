"""Plain-text tables and key/value blocks for the CLI (no dependencies, no colours)."""

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
