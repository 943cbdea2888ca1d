"""What a ranking is: one :class:`RankEntry` per backbone (or its failure) and the :class:`Ranking` of them,
best first, with its rows and its table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backbones.weights import RANDOM_INIT
from ..outputs.tables import format_table, ranking_cell
from ..stats import baseline_note

SCORE_HEADERS = {"logme": "LogME", "probe": "probe top-1"}  # score name → column header
FIELDS = ("rank", "backbone", "status", "weights", "score", "spread", "logme", "logme_std", "probe_acc",
          "probe_std", "probe_folds", "feature_dim", "images", "extract_images_per_s", "from_cache",
          "extract_seconds", "score_seconds", "seconds", "error")  # the rows' keys (CSV and JSON), in order


@dataclass
class RankEntry:
    """One backbone's scores, or why it has none."""

    backbone: str
    status: str = "pending"  # ok | failed
    weights: str = ""  # "pretrained", RANDOM_INIT, or a weight tag / file
    logme: float | None = None
    logme_std: float | None = None  # over the k training folds
    probe_acc: float | None = None  # mean held-out accuracy of the k-fold converged linear probe
    probe_std: float | None = None  # over the k folds
    probe_folds: list[float] = field(default_factory=list)
    feature_dim: int | None = None
    images: int | None = None  # training images the scores are computed on
    extract_images_per_s: float | None = None  # when the features were made (maybe by an earlier call)
    from_cache: bool | None = None
    extract_seconds: float | None = None  # model set-up + extraction or cache read, in this call
    score_seconds: float | None = None
    seconds: float | None = None  # the whole entry
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the entry has scores."""
        return self.status == "ok"

    def score(self, name: str) -> tuple[float | None, float | None]:
        """``(value, spread)`` of score ``name`` (``"logme"`` or ``"probe"``)."""
        return (self.logme, self.logme_std) if name == "logme" else (self.probe_acc, self.probe_std)


def order(entries: list[RankEntry], score: str) -> list[RankEntry]:
    """Scored entries by ``score`` (higher first, then the other score), failures last in their order."""
    other = "probe" if score == "logme" else "logme"
    return sorted(entries, key=lambda e: (not e.ok, -(e.score(score)[0] or 0.0), -(e.score(other)[0] or 0.0)))


@dataclass
class Ranking:
    """All entries, best first by ``score``, and what they were computed on."""

    entries: list[RankEntry]
    out_dir: Path
    score: str  # the primary score: "logme" or "probe"
    folds: int
    data: str  # the data source
    summary: str  # what the scores were computed on, in words
    budget: int | None = None
    majority_baseline: float | None = None  # probe top-1 of always predicting the most frequent class

    def rows(self) -> list[dict[str, Any]]:
        """One dict per entry (keys :data:`FIELDS`): ``rank`` numbered over scored entries, ``"-"`` for failures."""
        rows = []
        for i, e in enumerate(self.entries, 1):
            value, spread = e.score(self.score)
            row = {k: getattr(e, k, None) for k in FIELDS}
            row.update(rank=i if e.ok else "-", score=value, spread=spread)
            rows.append(row)
        return rows

    def columns(self) -> list[tuple[str, str]]:
        """The table's ``(key, header)`` columns, the primary score first."""
        other = "probe" if self.score == "logme" else "logme"
        keys = {"logme": ("logme", "logme_std"), "probe": ("probe_acc", "probe_std")}
        head = SCORE_HEADERS
        return [("rank", "#"), ("backbone", "backbone"), (keys[self.score][0], head[self.score]),
                (keys[self.score][1], "±"), (keys[other][0], head[other]), (keys[other][1], "±"),
                ("feature_dim", "dim"), ("extract_images_per_s", "extract img/s"), ("seconds", "seconds"),
                ("weights", "weights"), ("status", "status")]

    def table(self, markdown: bool = False) -> str:
        """The ranking as an aligned text table (or Markdown), then the random-init and failure notes."""
        cols = self.columns()
        cells = [{k: ranking_cell(k, v) for k, v in row.items()} for row in self.rows()]
        if markdown:
            lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
            lines += ["| " + " | ".join(c[k] for k, _ in cols) + " |" for c in cells]
        else:
            lines = format_table(cells, cols).splitlines()
        note = baseline_note(self.majority_baseline, "the training images (probe top-1)")
        lines += ["", note] if note else []
        random = [e.backbone for e in self.entries if e.ok and e.weights == RANDOM_INIT]
        if random:
            lines += ["", f"{RANDOM_INIT}: {', '.join(random)} ranked without pretrained weights; their scores say "
                      "little about the pretrained backbone."]
        errors = [f"- {e.backbone}: {e.error}" for e in self.entries if e.error]
        return "\n".join(lines + (["", "Failed entries:", *errors] if errors else []))
