"""``zoo_core.rank`` / ``zoo rank``: backbones whose features are of known quality come out in the right order by
both scores; the training-split features land in the cache under the key a feature-extraction run reads; a
``budget`` subsample is stratified and keyed apart; failures are recorded while the rest is ranked; CLI JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers_cli import one_line_error, run
from helpers_images import assert_png, make_folder
from helpers_toys import NOISE_DIMS

import zoo_core
from zoo_core import cache
from zoo_core import data as zdata
from zoo_core.errors import ZooError
from zoo_core.headfit import stratified_folds
from zoo_core.ranking import features as rank_features

FAST = {"image_size": 32, "progress": False}
DATA3_PER_CLASS = 20  # 48 train / 12 val


def record_extractions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool, int]]:
    """Wrap the feature service's ``extract_features``: one ``(split key's split, from_cache, rows)`` per call."""
    real, calls = cache.extract_features, []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        fs = real(*args, **kwargs)
        calls.append((kwargs["key"].parts["split"], fs.from_cache, len(fs)))
        return fs

    monkeypatch.setattr(cache.service, "extract_features", wrapped)
    return calls


# ---- tests -----------------------------------------------------------------------------------------
def test_rank_orders_known_feature_quality_by_both_scores_and_writes_outputs(
        tmp_path: Path, data3: Path, toys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["rank_noise", "rank_good", "rank_weak"]
    calls = record_extractions(monkeypatch)
    out = tmp_path / "rank"
    ranking = zoo_core.rank(names, data3, out_dir=out, score="logme", **FAST)
    assert [e.backbone for e in ranking.entries] == ["rank_good", "rank_weak", "rank_noise"]
    by = {e.backbone: e for e in ranking.entries}
    good, weak, noise = by["rank_good"], by["rank_weak"], by["rank_noise"]
    assert good.logme > weak.logme > noise.logme
    assert good.probe_acc > weak.probe_acc > noise.probe_acc
    assert good.probe_acc >= 0.9 and 0.45 <= weak.probe_acc <= 0.85 and noise.probe_acc <= 0.55  # chance: 1/3
    for e in ranking.entries:
        assert e.ok and e.weights == "pretrained" and e.images == 48 and len(e.probe_folds) == 5
        assert e.probe_std == pytest.approx(float(np.std(e.probe_folds)), abs=1e-5) and e.logme_std >= 0
        assert e.from_cache is False and e.extract_images_per_s > 0 and e.seconds >= e.score_seconds > 0
    assert (good.feature_dim, weak.feature_dim, noise.feature_dim) == (12 + NOISE_DIMS, 1 + NOISE_DIMS, NOISE_DIMS)
    assert sorted(calls) == sorted([("train", False, 48)] * 3)  # the training split only, once each

    saved = json.loads((out / "ranking.json").read_text())
    assert saved["score"] == "logme" and saved["folds"] == 5 and saved["entries"] == json.loads(
        json.dumps(ranking.rows()))
    assert [r["rank"] for r in saved["entries"]] == [1, 2, 3]
    assert [r["score"] for r in saved["entries"]] == [e.logme for e in ranking.entries]
    with open(out / "ranking.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["backbone"] for r in rows] == ["rank_good", "rank_weak", "rank_noise"]
    assert float(rows[0]["probe_acc"]) == pytest.approx(good.probe_acc)
    md = (out / "ranking.md").read_text()
    assert "| 1 | rank_good |" in md and "LogME" in md.splitlines()[0]
    assert_png(out / "score_vs_speed.png", min_size=(50, 50))

    calls.clear()  # ordered by the probe, from the cache this time (no backbone forward)
    by_probe = zoo_core.rank(names, data3, out_dir=out, score="probe", **FAST)
    assert [e.backbone for e in by_probe.entries] == ["rank_good", "rank_weak", "rank_noise"]
    assert all(e.from_cache for e in by_probe.entries) and [c[1] for c in calls] == [True] * 3
    assert [e.probe_acc for e in by_probe.entries] == [by[n].probe_acc for n in ("rank_good", "rank_weak",
                                                                                  "rank_noise")]
    assert by_probe.table().splitlines()[0].split()[:3] == ["#", "backbone", "probe"]


def test_rank_fills_the_cache_a_feature_extraction_run_reads(tmp_path: Path, data3: Path, toys: None,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # a toy with "pretrained" weights, and a real random-init network (the same seeded init as the run's)
    calls = record_extractions(monkeypatch)
    for name, weights in (("rank_good", "DEFAULT"), ("timm/test_resnet", None)):
        zoo_core.rank([name], data3, out_dir=tmp_path / "rank", weights=weights, **FAST)
        assert calls == [("train", False, 48)]
        calls.clear()
        result = zoo_core.train(name, data3, strategy="feature-extraction", weights=weights,
                                out_dir=str(tmp_path / "runs"), image_size=32)
        assert ("train", True, 48) in calls, (name, calls)  # read back, not extracted again
        assert ("val", False, 12) in calls and result.config["feature_cache_hit"] is False  # rank skips val
        calls.clear()
    capsys.readouterr()


def test_budget_subsample_is_stratified_seeded_and_keyed_apart(tmp_path: Path, toys: None) -> None:
    root = make_folder(tmp_path / "uneven", num_classes=3, per_class=30)
    for f in sorted((root / "class2").iterdir())[10:]:  # class2 keeps 10 images: 24 / 24 / 8 train
        f.unlink()
    split = zdata.load_data(root, progress=False)
    sub = rank_features.subsample(split, 14, seed=0)
    labels = zdata.known_labels(sub.train)
    assert np.bincount(labels).tolist() == [6, 6, 2]  # each class its share of the 56 training images
    assert sub.fingerprint != split.fingerprint and sub.val is split.val
    assert rank_features.subsample(split, 14, seed=0).fingerprint == sub.fingerprint  # seeded
    assert rank_features.subsample(split, 14, seed=1).fingerprint != sub.fingerprint
    assert rank_features.subsample(split, 500, seed=0) is split  # a budget above the split: the split itself
    with pytest.raises(ZooError, match="--budget"):
        rank_features.subsample(split, 0, seed=0)

    small = zoo_core.rank(["rank_good"], root, out_dir=tmp_path / "r", budget=14, **FAST)
    full = zoo_core.rank(["rank_good"], root, out_dir=tmp_path / "r", **FAST)
    assert small.entries[0].images == 14 and full.entries[0].images == 56
    assert small.entries[0].from_cache is False and full.entries[0].from_cache is False  # another key
    assert "stratified subsample of 56" in small.summary and small.budget == 14
    assert sorted(e["n"] for e in cache.cache_summary() if e["kind"] == "features") == [14, 56]


def test_failures_are_recorded_and_the_rest_ranked(tmp_path: Path, data3: Path, toys: None) -> None:
    out = tmp_path / "rank"
    ranking = zoo_core.rank(["rank_broken", "rank_offline", "rank_weak"], data3, out_dir=out, **FAST)
    assert [(e.backbone, e.status) for e in ranking.entries] == [
        ("rank_weak", "ok"), ("rank_broken", "failed"), ("rank_offline", "failed")]
    by = {e.backbone: e for e in ranking.entries}
    assert by["rank_broken"].error == "RuntimeError: boom: rank_broken cannot be built"
    assert by["rank_offline"].error.startswith("WeightsError: rank_offline: pretrained weights unavailable")
    assert [r["rank"] for r in ranking.rows()] == [1, "-", "-"]
    table = ranking.table()
    assert "Failed entries:" in table and "- rank_broken: RuntimeError: boom" in table
    assert "boom" in (out / "errors" / "rank_broken.txt").read_text()  # the traceback

    again = zoo_core.rank(["rank_offline", "rank_weak"], data3, out_dir=out, fallback_random=True, **FAST)
    offline = next(e for e in again.entries if e.backbone == "rank_offline")
    assert offline.ok and offline.weights == "RANDOM INIT" and "RANDOM INIT: rank_offline" in again.table()

    with pytest.raises(ZooError, match="max_entries=2"):  # refused before any data is read
        zoo_core.rank("rank_*", tmp_path / "no-such-data", max_entries=2, **FAST)
    with pytest.raises(ZooError, match="unknown score"):
        zoo_core.rank(["rank_good"], data3, score="accuracy", **FAST)
    with pytest.raises(ZooError, match="unknown option.*epochs"):
        zoo_core.rank(["rank_good"], data3, epochs=3, **FAST)
    with pytest.raises(ZooError, match="too few for a 5-fold probe"):
        zoo_core.rank(["rank_good"], data3, budget=6, **FAST)


def test_stratified_folds_partition_each_class_evenly() -> None:
    labels = np.array([0] * 11 + [1] * 7 + [2] * 3)
    folds = [f.numpy() for f in stratified_folds(torch.as_tensor(labels), 5, seed=3)]
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(labels)))
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for c, n_c in enumerate((11, 7, 3)):
        per_fold = [int((labels[f] == c).sum()) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == n_c
    assert [f.tolist() for f in stratified_folds(torch.as_tensor(labels), 5, seed=3)] == [f.tolist() for f in folds]


def test_cli_rank_json_and_errors(tmp_path: Path, data3: Path, toys: None, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rank"
    code, stdout, err = run(capsys, "rank", "rank_good", "rank_noise", "rank_broken", "--data", data3,
                            "--image-size", "32", "--score", "probe", "--folds", "3", "--out", out, "--json")
    assert code == 0, err
    rows = json.loads(stdout)  # stdout is only the JSON
    assert [(r["backbone"], r["rank"]) for r in rows] == [("rank_good", 1), ("rank_noise", 2), ("rank_broken", "-")]
    assert rows[0]["score"] == rows[0]["probe_acc"] and len(rows[0]["probe_folds"]) == 3
    assert rows == json.loads((out / "ranking.json").read_text())["entries"]

    code, stdout, _ = run(capsys, "rank", "rank_broken", "--data", data3, "--image-size", "32", "--out", out)
    assert code == 1 and "Failed entries:" in stdout  # nothing ranked: exit status 1
    code, stdout, err = run(capsys, "rank", "rank_good", "--data", data3, "--folds", "1", "--out", out)
    assert code == 2 and stdout == "" and "(--folds)" in one_line_error(err)
    code, stdout, err = run(capsys, "rank", "nothing_like_this*", "--data", data3, "--out", out)
    assert code == 2 and "matches no backbone" in one_line_error(err)
    code, stdout, err = run(capsys, "rank", "--data", data3, "--out", out)
    assert code == 2 and "no backbones to rank" in one_line_error(err)
    code, _, err = run(capsys, "rank", "rank_good", "--data", data3, "--score", "vibes")
    assert code == 2 and "invalid choice" in err
