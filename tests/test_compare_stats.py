"""Statistics in every leaderboard, ``--folds K``, and what compare measures:
intervals and McNemar p-values against hand-computed values, ties of entries one image apart, folds on
cached features, and a peak memory that spans the inference pass and never resets the process's mark."""

from __future__ import annotations

import csv
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats
import torch

import zoo_core
from zoo_core import cache, headfit, stats
from zoo_core import data as zdata
from zoo_core.comparison import Entry, Leaderboard, folds, measure, significance
from zoo_core.comparison import run as compare_run
from zoo_core.training import TrainConfig

pytestmark = pytest.mark.usefixtures("skip_run_plots")  # compare's own plots still draw
HEADER = ["index", "item", "target", "pred", "correct", "p_pred", "p_target", "loss"]
ITEMS = [f"class{i % 3}/img{i:02d}.png" for i in range(9)]


def write_predictions(run_dir: Path, items: list[str], correct: list[bool]) -> None:
    """A run's val_predictions.csv in the trainer's format (only ``item`` and ``correct`` matter here)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "val_predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i, (item, ok) in enumerate(zip(items, correct)):
            w.writerow([i, item, "a", "a" if ok else "b", int(ok), 0.9, 0.9 if ok else 0.1, 0.1 if ok else 2.3])


def right(*wrong: int, n: int = 9) -> list[bool]:
    """Correct on every image but the ``wrong`` ones."""
    return [i not in wrong for i in range(n)]


# ---- significance on hand-made predictions -----------------------------------------------------------
def test_intervals_and_mcnemar_against_number_one_match_hand_computed_values(tmp_path: Path) -> None:
    cases = {  # backbone → per image right/wrong, on the same 9 images
        "lead": right(8),  # 8/9
        "one_apart": right(7, 8),  # 7/9: #1 alone right on image 7, nothing the other way
        "mixed": right(0, 1, 2),  # 6/9: #1 alone right on images 0, 1, 2, "mixed" alone on image 8
        "worse": [False] * 9,  # 0/9: #1 alone right on 8 images
    }
    entries = []
    for name, correct in cases.items():
        write_predictions(tmp_path / name, ITEMS, correct)
        entries.append(Entry(name, "feature-extraction", status="ok", run_dir=str(tmp_path / name),
                             val_acc=sum(correct) / 9))
    write_predictions(tmp_path / "other_split", [f"x{i}.png" for i in range(9)], right())
    entries.append(Entry("other_split", "feature-extraction", status="reused", run_dir=str(tmp_path / "other_split"),
                         val_acc=1 / 9))  # ranked last on purpose: its images are not #1's
    entries.append(Entry("no_csv", "feature-extraction", status="ok", run_dir=str(tmp_path / "none"), val_acc=0.0))
    significance.annotate(entries)
    e = {x.backbone: x for x in entries}

    # Wilson 8/9, z = 1.96: centre (8/9 + z²/18) / (1 + z²/9) = 0.77256, half 1.96·sqrt(8/729 + z²/324) / 1.42683
    assert (e["lead"].top1_low, e["lead"].top1_high) == (pytest.approx(0.56500, abs=1e-5), pytest.approx(0.98011, abs=1e-5))
    for x in entries[:5]:  # and scipy's independent implementation agrees on every entry
        ci = scipy.stats.binomtest(x.val_correct, x.val_images).proportion_ci(method="wilson")
        assert (x.top1_low, x.top1_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert e["worse"].top1_low == 0.0 and e["worse"].top1_high == pytest.approx(0.29915, abs=1e-5)
    assert e["lead"].p_vs_1 is None and e["lead"].tied_with_1 is None  # #1 is not tested against itself
    # one image apart: 1 discordant image, p = min(1, 2 · P(X ≤ 0 | n = 1)) = 1 → tied
    assert (e["one_apart"].only_1_right, e["one_apart"].only_this_right, e["one_apart"].p_vs_1) == (1, 0, 1.0)
    assert e["one_apart"].tied_with_1 is True
    # 3 vs 1 discordant: p = 2 · P(X ≤ 1 | n = 4) = 2 · 5/16 → still tied
    assert (e["mixed"].only_1_right, e["mixed"].only_this_right) == (3, 1)
    assert e["mixed"].p_vs_1 == pytest.approx(10 / 16) and e["mixed"].tied_with_1 is True
    # clearly worse: 8 discordant images all one way, p = 2 · (1/2)^8 = 1/128 < 0.05 → not tied
    assert e["worse"].p_vs_1 == pytest.approx(1 / 128) and e["worse"].tied_with_1 is False
    # other images: interval yes, paired test no, and the note says why; a missing file likewise
    assert e["other_split"].val_correct == 9 and e["other_split"].p_vs_1 is None
    assert "not #1's 9 (18 differ): no paired test" in e["other_split"].stats_note
    assert e["no_csv"].val_images is None and "no val_predictions.csv in" in e["no_csv"].stats_note
    assert "summary.json" in e["other_split"].stats_note  # 9/9 in the CSV against a top-1 of 1/9

    table = Leaderboard(entries, tmp_path).table()
    lines = table.splitlines()
    assert "vs #1" in lines[0] and "0.8889 (0.565-0.980)" in lines[2]
    assert "tied, p=1.000" in lines[3] and "tied, p=0.625" in lines[4] and "p=0.008" in lines[5]
    assert "tied" not in lines[5] and "95 % Wilson interval on the 9 validation images" in table
    assert "Note: no_csv [feature-extraction]: no val_predictions.csv" in table


def test_a_predictions_file_that_lists_an_image_twice_is_refused(tmp_path: Path) -> None:
    write_predictions(tmp_path / "r", ["a.png", "a.png"], [True, False])
    with pytest.raises(ValueError, match=r"lists image 'a.png' twice"):
        significance.read_correct(tmp_path / "r")


# ---- the same through compare, with the trainer replaced (its seam) -------------------------------------
def fake_trainer(outcomes: dict[str, list[bool]]) -> Any:
    """A ``train`` that writes what compare reads of a finished run: the per-image results ``outcomes``
    (by backbone) on the split's real validation items."""

    def train(config: TrainConfig, data: Any) -> None:
        run = Path(config.out_dir) / config.run_name
        run.mkdir(parents=True, exist_ok=True)
        correct = outcomes[config.backbone]
        items = [zdata.item_name(data.val, i) for i in range(len(data.val))]
        write_predictions(run, items, correct)
        acc = sum(correct) / len(correct)
        (run / "summary.json").write_text(json.dumps({
            "metrics": {"val_acc": acc, "val_loss": 1 - acc}, "total_params": 10, "trainable_params": 2,
            "train_seconds": 0.1}))
        (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_acc": acc, "val_loss": 1 - acc}) + "\n")

    return train


def test_compare_reports_ties_and_its_outputs_hold_the_statistics_of_the_csvs(
        tmp_path: Path, data3: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = {"resnet18": right(8), "vgg11": right(7, 8), "timm/test_resnet": [False] * 9}
    monkeypatch.setattr(compare_run, "train", fake_trainer(outcomes))
    monkeypatch.setattr(measure, "inference_speed", lambda run_dir, device: 100.0)
    out = tmp_path / "cmp"
    board = zoo_core.compare(list(outcomes), data3, out_dir=out, weights=None, image_size=32, progress=False)
    assert [e.backbone for e in board.entries] == ["resnet18", "vgg11", "timm/test_resnet"]
    doc = json.loads((out / "leaderboard.json").read_text())
    assert doc["tie_alpha"] == stats.TIE_ALPHA == 0.05
    rows = {r["backbone"]: r for r in doc["entries"]}
    assert rows["vgg11"]["tied_with_1"] is True and rows["vgg11"]["p_vs_1"] == 1.0  # one image apart: tied
    assert rows["timm/test_resnet"]["tied_with_1"] is False  # 8 images one way: not tied
    lead = {zdata.item_name(board_split(data3).val, i): ok for i, ok in enumerate(outcomes["resnet18"])}
    items = sorted(lead)
    for name, r in rows.items():
        with open(out / r["run_dir"] / "val_predictions.csv", newline="") as f:
            mine = {row["item"]: row["correct"] == "1" for row in csv.DictReader(f)}
        assert mine.keys() == lead.keys()
        assert [r["top1_low"], r["top1_high"]] == list(stats.wilson_interval(sum(mine.values()), len(mine)))
        if name != "resnet18":
            assert r["p_vs_1"] == stats.mcnemar_exact([lead[i] for i in items], [mine[i] for i in items])["p_value"]
    with open(out / "leaderboard.csv", newline="") as f:
        csv_rows = {r["backbone"]: r for r in csv.DictReader(f)}
    assert csv_rows["vgg11"]["tied_with_1"] == "True" and float(csv_rows["vgg11"]["top1_low"]) == rows["vgg11"]["top1_low"]
    md = (out / "leaderboard.md").read_text()
    assert "| vs #1 |" in md and "tied, p=1.000" in md and "McNemar" in md


def board_split(data: Path) -> Any:
    return zdata.load_data(data, progress=False)


# ---- folds ---------------------------------------------------------------------------------------------
def test_stratified_folds_partition_every_class_evenly() -> None:
    y = torch.tensor([0] * 10 + [1] * 7 + [2] * 3)
    parts = headfit.stratified_folds(y, 3, seed=0)
    assert sorted(torch.cat(parts).tolist()) == list(range(20))  # disjoint, and every row once
    assert sorted(len(p) for p in parts) == [6, 7, 7]
    for c, n_c in ((0, 10), (1, 7), (2, 3)):
        assert all(n_c // 3 <= int((y[p] == c).sum()) <= -(-n_c // 3) for p in parts)
    assert [p.tolist() for p in headfit.stratified_folds(y, 3, seed=0)] == [p.tolist() for p in parts]
    assert [p.tolist() for p in headfit.stratified_folds(y, 3, seed=1)] != [p.tolist() for p in parts]
    with pytest.raises(ValueError, match="k >= 2"):
        headfit.stratified_folds(y, 1, seed=0)


def test_folds_3_gives_three_values_with_mean_and_std_from_the_cache(
        tmp_path: Path, data3: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    passes: list[bool] = []
    real = cache.extract_features

    def extract(*args: Any, **kwargs: Any) -> Any:
        fs = real(*args, **kwargs)
        passes.append(fs.from_cache)
        return fs

    monkeypatch.setattr(cache.service, "extract_features", extract)
    t0 = time.perf_counter()
    board = zoo_core.compare("timm/test_resnet", data3, out_dir=tmp_path / "cmp", weights=None, image_size=32,
                             progress=False, folds=3)
    assert time.perf_counter() - t0 < 120
    (e,) = board.entries
    assert e.folds_k == 3 and len(e.folds_top1) == 3 and all(0 <= v <= 1 for v in e.folds_top1)
    assert e.folds_mean == pytest.approx(statistics.fmean(e.folds_top1))
    assert e.folds_std == pytest.approx(statistics.stdev(e.folds_top1))
    assert e.folds_mean > 0.6  # the square's corner is easy: well above chance (1/3) on held-out folds
    # the run extracted train and val once (then read val back for its predictions); the folds read both back
    assert passes[:2] == [False, False] and passes[2:] == [True] * (len(passes) - 2) and len(passes) >= 4
    (row,) = json.loads((tmp_path / "cmp" / "leaderboard.json").read_text())["entries"]
    assert row["folds_top1"] == e.folds_top1 and row["folds_k"] == 3
    with open(tmp_path / "cmp" / "leaderboard.csv", newline="") as f:
        (csv_row,) = csv.DictReader(f)
    assert [float(v) for v in csv_row["folds_top1"].split()] == e.folds_top1
    assert "folds top-1" in board.table() and f"{e.folds_mean:.4f} ± {e.folds_std:.4f}" in board.table()


def test_only_cached_feature_entries_are_refolded_and_bad_fold_counts_are_refused(tmp_path: Path,
                                                                                  data3: Path) -> None:
    assert folds.refoldable(TrainConfig(strategy="feature-extraction"))
    assert not folds.refoldable(TrainConfig(strategy="feature-extraction", augment=True))
    assert not folds.refoldable(TrainConfig(strategy="finetune"))
    assert not folds.add_folds(Entry("resnet18", "feature-extraction", status="reused"), None, 3,
                               torch.device("cpu"))  # merged from an earlier call: no config, no folds
    for bad in (1, 0, 2.5, True):
        with pytest.raises(zoo_core.ZooError, match="folds must be a whole number of at least 2"):
            zoo_core.compare("resnet18", data3, out_dir=tmp_path / "x", folds=bad)
    with pytest.raises(zoo_core.ZooError, match="--folds 50 is more than the 42 images"):
        zoo_core.compare("resnet18", data3, out_dir=tmp_path / "x", folds=50, progress=False)
    assert not (tmp_path / "x").exists()  # refused before anything was written
    x = 0.1 * torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(30) % 3
    x[:, 0] += 4 * y  # well separated along one feature: every held-out fold right
    assert folds.fold_top1(x, y, 3, 5, seed=0) == [1.0] * 5


# ---- peak memory ---------------------------------------------------------------------------------------
needs_proc = pytest.mark.skipif(measure.hwm_mb() is None, reason="needs /proc/self/status (Linux)")


def touch(mb: int) -> np.ndarray:
    return np.ones(mb * 2**20, dtype=np.uint8)  # written, so resident


@needs_proc
def test_peak_memory_leaves_the_process_high_water_mark_alone() -> None:
    spike = touch(200)
    del spike
    before = measure.hwm_mb()
    with measure.PeakMemory(torch.device("cpu")) as mem:
        time.sleep(0.05)
    assert measure.hwm_mb() >= before  # never reset: /usr/bin/time still sees the process's peak
    assert mem.peak_mb < before - 100 and not mem.exact  # the block's own peak leaves the earlier spike out


@needs_proc
def test_peak_memory_sees_memory_held_inside_the_block() -> None:
    base = measure.rss_mb()
    with measure.PeakMemory(torch.device("cpu")) as mem:
        held = touch(150)
        time.sleep(0.2)  # several sampling intervals
        del held
    assert mem.peak_mb >= base + 140


@needs_proc
def test_the_entry_peak_includes_the_inference_pass(tmp_path: Path, data3: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def speed(run_dir: Path, device: torch.device) -> float:
        held = touch(300)
        time.sleep(0.2)
        del held
        return 50.0

    monkeypatch.setattr(compare_run, "train", fake_trainer({"resnet18": right(0)}))
    monkeypatch.setattr(measure, "inference_speed", speed)
    base = measure.rss_mb()
    board = zoo_core.compare("resnet18", data3, out_dir=tmp_path / "cmp", weights=None, image_size=32,
                             progress=False)
    (e,) = board.entries
    assert e.status == "ok" and e.infer_images_per_s == 50.0
    assert e.peak_mem_mb >= base + 280
