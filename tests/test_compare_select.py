"""``compare(..., select=K)``: successive halving ranks every candidate without training, trains feature
extraction only on the kept fraction and fine-tunes only the K best — and trains nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers_cli import one_line_error, run

import zoo_core
from zoo_core import cache
from zoo_core.comparison import run as compare_run
from zoo_core.errors import ZooError

FAST = {"image_size": 32, "progress": False, "epochs": 1, "batch_size": 8}
TOYS = ["rank_noise", "rank_weak", "rank_good", "rank_broken"]
DATA3_PER_CLASS = 20


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every (backbone, strategy) that compare actually trains, in order."""
    calls: list[tuple[str, str]] = []
    real = compare_run.train

    def spy(*, config: Any, data: Any) -> Any:
        calls.append((config.backbone, config.strategy))
        return real(config=config, data=data)

    monkeypatch.setattr(compare_run, "train", spy)
    return calls


def test_select_trains_only_what_it_keeps(toys: None, data3: Path, tmp_path: Path, trained: list,
                                          skip_run_plots: None, monkeypatch: pytest.MonkeyPatch) -> None:
    extractions: list[tuple[Any, bool]] = []
    real_extract = cache.extract_features

    def spy_extract(*args: Any, **kw: Any) -> Any:
        out = real_extract(*args, **kw)
        extractions.append((kw["key"], out.from_cache))
        return out

    monkeypatch.setattr(cache.service, "extract_features", spy_extract)
    board = zoo_core.compare(TOYS, data3, out_dir=tmp_path / "cmp", select=1, weights=None, **FAST)
    # 3 rankable candidates (rank_broken fails to build) → feature extraction on ceil(0.5 × 3) = 2, the best of
    # which is fine-tuned; the noise backbone is ranked last and never trained
    assert trained == [("rank_good", "feature-extraction"), ("rank_weak", "feature-extraction"),
                       ("rank_good", "finetune")]
    sel = board.selection
    assert sel["ranked"][:3] == ["rank_good", "rank_weak", "rank_noise"] and "rank_broken" in sel["ranked"]
    assert sel["feature_extraction"] == ["rank_good", "rank_weak"] and sel["fine_tuned"] == ["rank_good"]
    rows = {(r["backbone"], r["strategy"]): r for r in board.rows()}
    assert set(rows) == {("rank_good", "feature-extraction"), ("rank_weak", "feature-extraction"),
                         ("rank_good", "finetune"), ("rank_broken", "feature-extraction")}
    assert rows[("rank_broken", "feature-extraction")]["error"].startswith("ranking failed: ")
    assert not (tmp_path / "cmp" / "runs" / "rank_noise-feature-extraction").exists()
    saved = json.loads((tmp_path / "cmp" / "leaderboard.json").read_text())
    assert saved["selection"]["fine_tuned"] == ["rank_good"]
    assert (tmp_path / "cmp" / "rank" / "ranking.json").is_file()
    assert "--select 1: 4 backbone(s) ranked by probe" in board.table()
    # stage 2 read the training features the ranking stage cached (the same key): no second backbone pass
    passes = [(key.parts["backbone"], key.parts["split"], hit) for key, hit in extractions]
    assert passes.count(("rank_good", "train", False)) == 1 and ("rank_good", "train", True) in passes


def test_select_keep_and_strategies(toys: None, data3: Path, tmp_path: Path, trained: list,
                                    skip_run_plots: None) -> None:
    zoo_core.compare(TOYS[:3], data3, out_dir=tmp_path / "cmp", select=2, select_keep=1.0,
                     strategies=["feature-extraction", "full"], weights=None, **FAST)
    fe = [b for b, s in trained if s == "feature-extraction"]
    assert sorted(fe) == ["rank_good", "rank_noise", "rank_weak"]  # keep 1.0: every ranked backbone
    assert [s for _, s in trained if s != "feature-extraction"] == ["full", "full"]  # the asked strategy, K = 2


@pytest.mark.parametrize("kw,needle", [
    ({"select": 0}, "--select must be a positive integer"),
    ({"select": 1, "select_keep": 1.5}, "--select-keep must be a fraction in (0, 1]"),
    ({"select": 1, "select_budget": 1}, "--select-budget must be an integer of at least 2"),
    ({"select": 1, "select_score": "vibes"}, "unknown score 'vibes'"),
])
def test_bad_select_options_fail_before_any_work(toys: None, data3: Path, tmp_path: Path, kw: dict,
                                                 needle: str) -> None:
    with pytest.raises(ZooError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        zoo_core.compare(TOYS, data3, out_dir=tmp_path / "cmp", **kw)
    assert not (tmp_path / "cmp").exists()


def test_select_counts_only_trained_entries_against_max_entries(toys: None, data3: Path, tmp_path: Path) -> None:
    with pytest.raises(ZooError, match="would run 3 entries"):  # 2 feature extraction + 1 fine-tune
        zoo_core.compare(TOYS, data3, out_dir=tmp_path / "cmp", select=1, max_entries=2)


def test_cli_select(toys: None, data3: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                    skip_run_plots: None) -> None:
    code, out, err = run(capsys, "compare", *TOYS[:3], "--data", data3, "--out", tmp_path / "cmp", "--select", "1",
                         "--weights", "none", "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--json")
    assert code == 0
    rows = json.loads(out)
    assert sorted((r["backbone"], r["strategy"]) for r in rows) == [
        ("rank_good", "feature-extraction"), ("rank_good", "finetune"), ("rank_weak", "feature-extraction")]
    code, _, err = run(capsys, "compare", *TOYS[:3], "--data", data3, "--out", tmp_path / "c2", "--select", "-1")
    assert code == 2 and "--select must be a positive integer" in one_line_error(err)
