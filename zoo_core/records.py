"""The files backbone-zoo reads back, checked on reading: a run's ``config.json`` and ``val_predictions.csv``, a
compare folder's ``leaderboard.json``, a rank folder's ``ranking.json``.

Each reader returns the parsed file with every field the commands use of the type they use it as, or raises
one :class:`RecordError` line naming the file and the field (``report``, ``export``, ``predict`` and
``--resume`` read through these, so a damaged or hand-edited file never becomes a traceback).
"""

from __future__ import annotations

import csv
import json
import numbers
import os
from pathlib import Path
from typing import Any, Sequence

from .errors import ZooError


class RecordError(ZooError):
    """A file of a run or of a compare/rank folder that is damaged or edited into something else."""


def _kind(value: Any) -> str:
    return "null" if value is None else {dict: "an object", list: "a list", str: "a text", bool: "true/false"}.get(
        type(value), "a number" if isinstance(value, numbers.Number) else type(value).__name__)


_TYPES: dict[str, tuple[Any, str]] = {  # what a field may hold, and how the error says it
    "object": (lambda v: isinstance(v, dict), "an object"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "text": (lambda v: isinstance(v, str), "a text"),
    "number": (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool), "a number"),
    "texts": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of texts"),
    "numbers": (lambda v: isinstance(v, list) and all(isinstance(x, numbers.Real) and not isinstance(x, bool)
                                                      for x in v), "a list of numbers"),
    "rank": (lambda v: v == "-" or (isinstance(v, int) and not isinstance(v, bool)), "a rank number or '-'"),
}


def read_json(path: Path, what: str) -> Any:
    """The JSON document in ``path`` (``what``: what the file is, for the error when it is missing)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordError(f"{path} is missing: {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RecordError(f"{path} is not valid JSON ({exc}); restore it or run the command that wrote it "
                          "again") from None


def check_fields(doc: Any, path: Path, fields: dict[str, str], *, where: str = "", required: Sequence[str] = ()
                 ) -> dict[str, Any]:
    """``doc`` when it is an object whose ``fields`` (name → kind of :data:`_TYPES`) hold that kind or null
    and which has every ``required`` field; else a :class:`RecordError` naming ``path`` and the field."""
    at = f" {where}" if where else ""
    if not isinstance(doc, dict):
        raise RecordError(f"{path}:{at or ' the file'} must be an object, not {_kind(doc)}")
    for name in required:
        if name not in doc:
            raise RecordError(f"{path}:{at} has no field {name!r}")
    for name, kind in fields.items():
        value = doc.get(name)
        ok, said = _TYPES[kind]
        if value is not None and not ok(value):
            raise RecordError(f"{path}:{at} field {name!r} must be {said}, not {_kind(value)} ({str(value)[:40]!r})")
    return doc


RUN_CONFIG = {"train": "object", "data_source": "text", "classes": "texts", "resumes": "list",
              "data_fingerprint": "text", "surgical": "object"}


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run directory's ``config.json``: an object with a ``train`` object (the options it ran with)."""
    path = Path(run_dir) / "config.json"
    doc = read_json(path, "not a zoo run directory (give the folder `zoo train` wrote)")
    return check_fields(doc, path, RUN_CONFIG, required=("train",))


_BOARD_ROW = {"rank": "rank", "backbone": "text", "strategy": "text", "status": "text", "weights": "text",
              "run_dir": "text", "error": "text", "stats_note": "text", "folds_top1": "numbers",
              **dict.fromkeys(("val_acc", "val_top5", "val_loss", "total_params", "trainable_params",
                               "train_seconds", "infer_images_per_s", "peak_mem_mb", "val_images", "val_correct",
                               "top1_low", "top1_high", "p_vs_1", "only_1_right", "only_this_right", "folds_k",
                               "folds_mean", "folds_std"), "number")}


def read_leaderboard(folder: str | os.PathLike) -> dict[str, Any]:
    """A compare folder's ``leaderboard.json``: ``entries`` a list of rows whose fields have their types."""
    path = Path(folder) / "leaderboard.json"
    doc = check_fields(read_json(path, "not a compare folder"), path,
                       {"entries": "list", "classes": "list", "selection": "object", "tie_alpha": "number",
                        "majority_baseline": "number"},
                       required=("entries",))
    for i, row in enumerate(doc["entries"]):
        check_fields(row, path, _BOARD_ROW, where=f"entries[{i}]", required=("backbone", "strategy"))
        if row.get("val_acc") is not None and row.get("top1_low") is not None and row.get("top1_high") is None:
            raise RecordError(f"{path}: entries[{i}] has top1_low without top1_high")
        if row.get("folds_mean") is not None and row.get("folds_std") is None:
            raise RecordError(f"{path}: entries[{i}] has folds_mean without folds_std")
    return doc


_RANK_ROW = {"rank": "rank", "backbone": "text", "status": "text", "weights": "text", "error": "text",
             "probe_folds": "numbers",
             **dict.fromkeys(("score", "spread", "logme", "logme_std", "probe_acc", "probe_std", "feature_dim",
                              "images", "extract_images_per_s", "seconds"), "number")}


def read_ranking(folder: str | os.PathLike) -> dict[str, Any]:
    """A rank folder's ``ranking.json``: ``entries`` a list of rows whose fields have their types."""
    path = Path(folder) / "ranking.json"
    doc = check_fields(read_json(path, "not a rank folder"), path, {"entries": "list", "majority_baseline": "number"},
                       required=("entries",))
    for i, row in enumerate(doc["entries"]):
        check_fields(row, path, _RANK_ROW, where=f"entries[{i}]", required=("backbone",))
    return doc


def read_table(path: str | os.PathLike, columns: Sequence[str]) -> list[dict[str, str]]:
    """The rows of the CSV file ``path``, which must have the ``columns``."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except FileNotFoundError:
        raise RecordError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RecordError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise RecordError(f"{path} has no column {missing[0]!r} (its columns: {', '.join(header) or 'none'})")
    return rows
