"""Rank many backbones on your images in minutes: frozen features and transferability scores, no fine-tuning.

``zoo_core.rank(["timm/resnet*", "efficientnet_lite*"], "data/")`` (``zoo rank``) extracts every candidate's
features on the training split once (through the feature cache, with a feature-extraction run's key, so a
later ``compare`` reuses them), scores them with LogME and the k-fold converged linear probe, and writes a
ranked table, CSV, JSON and a score-vs-speed plot. ``docs/ARCHITECTURE.md`` ("Ranking") maps the modules:

- :mod:`.features` — the candidate's run config, the ``budget`` subsample, the features through the cache;
- :mod:`.scores` — LogME and the k-fold probe (folds from :func:`zoo_core.headfit.stratified_folds`), :data:`SCORES`;
- :mod:`.results` — :class:`RankEntry`, :class:`Ranking` (rows, table), the order;
- :mod:`.outputs` — ``ranking.md`` / ``.csv`` / ``.json`` and ``score_vs_speed.png``;
- :mod:`.api` — :func:`rank` itself: candidates, per-entry failures, progress.
"""

from __future__ import annotations

from .api import rank
from .features import RANK_OPTIONS
from .results import RankEntry, Ranking
from .scores import DEFAULT_SCORE, SCORES, Scores, score_features

__all__ = ["DEFAULT_SCORE", "RANK_OPTIONS", "SCORES", "RankEntry", "Ranking", "Scores", "rank", "score_features"]
