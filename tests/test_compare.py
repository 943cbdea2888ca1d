"""``zoo_core.compare``: outputs agree with the run directories, failures are recorded, reruns reuse,
patterns and families expand, random-init entries are marked, and images are decoded once per input size.

The seams: ``zoo_core.comparison.run.train`` (what each entry trains with) and ``comparison.Session``
(which entries a sequence of calls trained); statistics, folds and memory are in test_compare_stats.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers_images import assert_png, make_folder
from helpers_toys import FcHeadAdapter, plugin_of
from torch import nn

import zoo_core
from zoo_core import cache, comparison, stats
from zoo_core import data as zdata
from zoo_core.backbones import registry
from zoo_core.comparison import run as compare_run
from zoo_core.errors import UnknownBackboneError, WeightsError, ZooError

PLOTS = ("accuracy_vs_speed.png", "accuracy_vs_params.png", "learning_curves.png")
FAST = {"weights": None, "image_size": 32, "progress": False}


pytestmark = pytest.mark.usefixtures("skip_run_plots")  # compare's own plots still draw


# ---- a tiny in-process plugin: two fast nets of one family and one that cannot be built ------------
class ToyNet(nn.Module):
    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block(self.stem(x))).flatten(1))


class ToyAdapter(FcHeadAdapter):
    family = "cmptoy"

    def names(self) -> list[str]:
        return ["cmp_toy_a", "cmp_toy_b", "cmp_broken"]

    def create(self, name: str, *, weights: str | None = None, num_classes: int = 1000) -> nn.Module:
        if name == "cmp_broken":
            raise RuntimeError("boom: cmp_broken cannot be built")
        if weights is not None:  # like a built-in family offline with an empty cache
            raise WeightsError(f"{name}: pretrained weights unavailable offline")
        return ToyNet(num_classes, width=4 if name.endswith("a") else 6)


@pytest.fixture
def cmp_toys(add_plugin: Any) -> None:
    add_plugin(plugin_of(ToyAdapter()), name="cmptoy")


# ---- helpers ---------------------------------------------------------------------------------------
def read_board(out: Path) -> dict[str, Any]:
    return json.loads((out / "leaderboard.json").read_text())


def csv_correct(run_dir: Path) -> dict[str, bool]:
    """Per validation image of a run (its ``item``), whether it was right, straight from val_predictions.csv."""
    with open(run_dir / "val_predictions.csv", newline="") as f:
        return {row["item"]: row["correct"] == "1" for row in csv.DictReader(f)}


def by_backbone(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["backbone"]: r for r in rows}


def count_calls(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[Any]:
    """Wrap ``module.name`` so every call is recorded (first positional / config argument) and still runs."""
    real, calls = getattr(module, name), []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("config", args[0] if args else None))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


# ---- tests -----------------------------------------------------------------------------------------
def test_compare_outputs_agree_with_run_dirs_and_a_rerun_reuses_them(
        tmp_path: Path, data3: Path, cmp_toys: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    board = zoo_core.compare(["resnet18", "timm/test_resnet"], data3, out_dir=out, weights=None, image_size=32)
    err = capsys.readouterr().err
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", *PLOTS):
        assert (out / name).is_file(), name
    for name in PLOTS:
        assert_png(out / name, min_size=(50, 50))

    doc = read_board(out)
    assert doc["classes"] == ["class0", "class1", "class2"] and doc["data"] == str(data3.resolve())
    rows = doc["entries"]
    assert [r["rank"] for r in rows] == [1, 2]
    assert {r["backbone"] for r in rows} == {"resnet18", "timm/test_resnet"}
    assert (rows[0]["val_acc"], -rows[0]["val_loss"]) >= (rows[1]["val_acc"], -rows[1]["val_loss"])  # best first
    for r in rows:
        assert r["run_dir"] == f"runs/{Path(r['run_dir']).name}"  # stored relative to the compare folder
        run = out / r["run_dir"]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["backbone"] == r["backbone"] and summary["strategy"] == r["strategy"] == "feature-extraction"
        assert r["val_acc"] == summary["metrics"]["val_acc"] and r["val_loss"] == summary["metrics"]["val_loss"]
        assert r["val_top5"] is None and "val_top5" not in summary["metrics"]  # 3 classes: no top-5
        assert r["total_params"] == summary["total_params"] > r["trainable_params"] == summary["trainable_params"]
        assert r["train_seconds"] == summary["train_seconds"] > 0
        assert r["infer_images_per_s"] > 0 and r["peak_mem_mb"] > 0
        assert r["weights"] == "RANDOM INIT" and summary["random_init"] is True
        assert r["status"] == "ok" and r["error"] is None
        # the accuracy is the run's own: its confusion matrix on the 9 validation images
        matrix = summary["confusion_matrix"]
        assert sum(map(sum, matrix)) == 9 and r["val_acc"] == pytest.approx(sum(matrix[i][i] for i in range(3)) / 9)
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [h["val_loss"] for h in history] == [summary["metrics"]["val_loss"]]
        entry = json.loads((run / "entry.json").read_text())
        assert entry["infer_images_per_s"] == r["infer_images_per_s"] and entry["peak_mem_mb"] == r["peak_mem_mb"]
        assert (run / "best.pt").is_file()
        assert json.loads((run / "config.json").read_text())["train"]["data"] == str(data3)
    # statistics: the Wilson interval of each top-1 and the McNemar test against #1, on the runs' own CSVs
    correct = [csv_correct(out / r["run_dir"]) for r in rows]
    for r, c in zip(rows, correct):
        assert (r["val_images"], r["val_correct"]) == (9, sum(c.values())) and r["stats_note"] is None
        assert r["val_correct"] / 9 == pytest.approx(r["val_acc"])
        assert (r["top1_low"], r["top1_high"]) == stats.wilson_interval(r["val_correct"], 9)
    assert correct[0].keys() == correct[1].keys()
    items = sorted(correct[0])
    test = stats.mcnemar_exact([correct[0][i] for i in items], [correct[1][i] for i in items])
    assert rows[0]["p_vs_1"] is None and rows[0]["tied_with_1"] is None
    assert (rows[1]["p_vs_1"], rows[1]["only_1_right"], rows[1]["only_this_right"]) == (
        test["p_value"], test["a_only"], test["b_only"])
    assert rows[1]["tied_with_1"] is (test["p_value"] >= stats.TIE_ALPHA)
    # the Python object, the CSV and the Markdown say the same
    assert [e.backbone for e in board.entries] == [r["backbone"] for r in rows]
    assert board.rows() == rows
    with open(out / "leaderboard.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert [(c["backbone"], float(c["val_acc"]), float(c["val_loss"]), int(c["total_params"]), c["run_dir"])
            for c in csv_rows] == [(r["backbone"], r["val_acc"], r["val_loss"], r["total_params"], r["run_dir"])
                                   for r in rows]
    md = (out / "leaderboard.md").read_text()
    for r in rows:
        assert r["backbone"] in md and r["run_dir"] in md
    header = md.splitlines()[4]
    assert "top-1" in header and "top-5" not in header and "val loss" in header and "infer img/s" in header
    # terminal table: every entry, marked random init, no top-5 column for 3 classes; the library prints
    # only progress (stderr), never the table (the CLI prints it once, on stdout)
    table = board.table()
    assert table not in err and "resnet18 [feature-extraction]: training" in err and str(board) == table
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["#", "backbone", "strategy", "top-1"] and "top-5" not in lines[0]
    assert all(" RANDOM INIT " in line for line in lines[2:4])
    assert "RANDOM INIT: " in table and "without pretrained weights" in table
    # decoded once per distinct preprocessing: resnet18 (crop 0.875) and test_resnet (crop 0.95) differ
    pixels = [e for e in cache.cache_summary() if e["kind"] == "pixels"]
    assert sorted(e["split"] for e in pixels) == ["train", "train", "val", "val"]

    # a rerun trains nothing and reports the same numbers
    trains = count_calls(monkeypatch, compare_run, "train")
    again = zoo_core.compare(["resnet18", "timm/test_resnet"], data3, out_dir=out, weights=None, image_size=32,
                             progress=False)
    assert trains == [] and {e.status for e in again.entries} == {"reused"}
    assert [{**r, "status": "ok"} for r in read_board(out)["entries"]] == rows
    # a new entry in the same folder runs alone; the finished ones are reused
    third = zoo_core.compare(["resnet18", "timm/test_resnet", "cmp_toy_a"], data3, out_dir=out, **FAST)
    assert [c.backbone for c in trains] == ["cmp_toy_a"]
    assert by_backbone(third.rows())["cmp_toy_a"]["status"] == "ok"
    assert {by_backbone(third.rows())[b]["status"] for b in ("resnet18", "timm/test_resnet")} == {"reused"}


def test_a_failing_entry_is_recorded_and_the_others_finish(tmp_path: Path, data3: Path, cmp_toys: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cmp"
    board = zoo_core.compare(["cmp_broken", "cmp_toy_a"], data3, out_dir=out, **FAST)
    rows = by_backbone(read_board(out)["entries"])
    assert rows["cmp_toy_a"]["status"] == "ok" and rows["cmp_toy_a"]["rank"] == 1
    broken = rows["cmp_broken"]
    assert broken["status"] == "failed" and broken["rank"] == "-" and broken["val_acc"] is None
    assert broken["error"] == "RuntimeError: boom: cmp_broken cannot be built"
    assert "boom: cmp_broken" in (out / broken["run_dir"] / "error.txt").read_text()  # the full traceback
    assert [e.backbone for e in board.entries] == ["cmp_toy_a", "cmp_broken"]  # failures last
    assert "Failed entries:\n- cmp_broken [feature-extraction]: RuntimeError: boom" in board.table()
    assert "RuntimeError: boom" in (out / "leaderboard.md").read_text()
    for name in PLOTS:
        assert_png(out / name, min_size=(50, 50))

    # a rerun retries the failed entry only
    trains = count_calls(monkeypatch, compare_run, "train")
    again = zoo_core.compare(["cmp_broken", "cmp_toy_a"], data3, out_dir=out, **FAST)
    assert [c.backbone for c in trains] == ["cmp_broken"]
    assert {e.backbone: e.status for e in again.entries} == {"cmp_toy_a": "reused", "cmp_broken": "failed"}
    # a changed budget is another entry: it runs again; rerun=True runs finished entries again
    zoo_core.compare(["cmp_toy_a"], data3, out_dir=out, seed=1, **FAST)
    assert [c.backbone for c in trains] == ["cmp_broken", "cmp_toy_a"] and trains[-1].seed == 1
    zoo_core.compare(["cmp_toy_a"], data3, out_dir=out, seed=1, rerun=True, **FAST)
    assert len(trains) == 3

    # bad weights: a missing local file fails the entry (even with fallback_random) and names the file
    missing = tmp_path / "nope" / "missing.pth"
    bad = zoo_core.compare(["cmp_toy_b"], data3, out_dir=tmp_path / "bad", weights=str(missing), image_size=32,
                           fallback_random=True, progress=False)
    (entry,) = bad.entries
    assert entry.status == "failed" and entry.error.startswith("WeightsError") and str(missing) in entry.error
    assert read_board(tmp_path / "bad")["entries"][0]["error"] == entry.error


def test_random_init_fallback_is_marked_and_reused(tmp_path: Path, data3: Path, cmp_toys: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    kw = {"image_size": 32, "progress": False}  # weights="DEFAULT": the toy family has none
    strict = zoo_core.compare(["cmp_toy_a"], data3, out_dir=tmp_path / "strict", **kw)
    assert strict.entries[0].status == "failed" and "pretrained weights unavailable" in strict.entries[0].error

    out = tmp_path / "fallback"
    board = zoo_core.compare(["cmp_toy_a"], data3, out_dir=out, fallback_random=True, **kw)
    (entry,) = board.entries
    assert entry.status == "ok" and entry.weights == "RANDOM INIT"
    assert json.loads((Path(entry.run_dir) / "summary.json").read_text())["random_init"] is True
    assert "| RANDOM INIT |" in (out / "leaderboard.md").read_text()
    assert "RANDOM INIT: cmp_toy_a [feature-extraction] ran without pretrained weights" in board.table()
    # the rerun tries the pretrained weights again (they might be there now), then reuses the random run
    trains = count_calls(monkeypatch, compare_run, "train")
    again = zoo_core.compare(["cmp_toy_a"], data3, out_dir=out, fallback_random=True, **kw)
    assert [c.weights for c in trains] == ["DEFAULT"]
    assert again.entries[0].status == "reused" and again.entries[0].weights == "RANDOM INIT"


def test_patterns_and_families_expand(data3: Path, tmp_path: Path, cmp_toys: None) -> None:
    resnets = zoo_core.list_backbones("resnet*")
    assert registry.expand_backbones("resnet*") == resnets and "resnet18" in resnets
    assert all(not n.startswith("timm/") for n in resnets)
    assert registry.expand_backbones(None, family="vgg") == zoo_core.list_backbones(family="vgg")
    assert len(registry.expand_backbones(None, family="vgg")) == 8
    assert registry.expand_backbones(["cmp_toy_*", "resnet18", "cmp_toy_a"]) == ["cmp_toy_a", "cmp_toy_b",
                                                                                    "resnet18"]
    assert registry.expand_backbones("cmp_*", family="cmptoy") == ["cmp_broken", "cmp_toy_a", "cmp_toy_b"]
    with pytest.raises(UnknownBackboneError, match="resnet18"):
        registry.expand_backbones(["resnet1"])  # close matches named
    with pytest.raises(ZooError, match="matches no backbone"):
        registry.expand_backbones(["nothing_like_this*"])
    with pytest.raises(ZooError, match="unknown family 'nofamily'.*cmptoy"):
        registry.expand_backbones(None, family="nofamily")
    with pytest.raises(ZooError, match="no backbones given"):
        registry.expand_backbones([])
    # a bare family as big as timm's is refused before any work, naming the limit and how to lift it
    with pytest.raises(ZooError, match=r"backbones × 2 strategies.*max_entries=64.*--max-entries"):
        zoo_core.compare(None, data3, family="timm", strategies=["feature-extraction", "finetune"],
                         out_dir=tmp_path / "huge")
    assert not (tmp_path / "huge").exists()
    # a family runs every member; options that compare sets itself are refused before any work
    board = zoo_core.compare("cmp_toy_*", data3, family="cmptoy", out_dir=tmp_path / "fam", **FAST)
    assert sorted(e.backbone for e in board.entries) == ["cmp_toy_a", "cmp_toy_b"]
    assert all(e.status == "ok" for e in board.entries)
    with pytest.raises(ZooError, match="unknown training option.*epoch"):
        zoo_core.compare("cmp_toy_a", data3, out_dir=tmp_path / "x", epoch=3)
    with pytest.raises(ZooError, match="compare sets run_name"):
        zoo_core.compare("cmp_toy_a", data3, out_dir=tmp_path / "x", run_name="r")
    with pytest.raises(ZooError, match="unknown strategy 'fast'"):
        zoo_core.compare("cmp_toy_a", data3, out_dir=tmp_path / "x", strategies=["fast"])
    assert not (tmp_path / "x").exists()


def test_strategy_keyword_and_several_strategies(data3: Path, tmp_path: Path, cmp_toys: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    board = zoo_core.compare("cmp_toy_a", data3, out_dir=tmp_path / "one", strategy="finetune", epochs=1, **FAST)
    assert [e.strategy for e in board.entries] == ["finetune"]
    session = comparison.Session()  # remembers what the calls that share it trained
    board = zoo_core.compare("cmp_toy_a", data3, out_dir=tmp_path / "two", strategies=["feature-extraction", "full"],
                             epochs=1, session=session, **FAST)
    assert sorted(e.strategy for e in board.entries) == ["feature-extraction", "full"]
    assert all(e.status == "ok" for e in board.entries)
    curves = {r["strategy"]: r for r in read_board(tmp_path / "two")["entries"]}
    assert Path(curves["full"]["run_dir"]).name == "cmp_toy_a-full"
    # merge: one folder accumulates one leaderboard over several calls; calls that share a Session list
    # each other's trained entries as "ok", any other call (a later process) only lists them ("reused")
    assert len(session.trained) == 2
    merged = zoo_core.compare("cmp_toy_b", data3, out_dir=tmp_path / "two", merge=True, epochs=1, session=session,
                              **FAST)
    assert sorted((e.backbone, e.strategy, e.status) for e in merged.entries) == [
        ("cmp_toy_a", "feature-extraction", "ok"), ("cmp_toy_a", "full", "ok"),
        ("cmp_toy_b", "feature-extraction", "ok")]
    assert len(read_board(tmp_path / "two")["entries"]) == 3
    listed = zoo_core.compare("cmp_toy_b", data3, out_dir=tmp_path / "two", merge=True, epochs=1, **FAST)
    assert [e.status for e in listed.entries] == ["reused"] * 3  # a call without the session: all reused


def _decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every image file the data pipeline decodes."""
    real, seen = zdata.images.load_image, []

    def counting(path: Any) -> Any:
        seen.append(str(path))
        return real(path)

    monkeypatch.setattr(zdata.images, "load_image", counting)
    return seen


@pytest.mark.parametrize("strategy, epochs", [("feature-extraction", None), ("finetune", 2)])
def test_shared_decoding_decodes_once_per_input_size_with_identical_results(
        tmp_path: Path, data3: Path, cmp_toys: None, monkeypatch: pytest.MonkeyPatch, strategy: str,
        epochs: int | None) -> None:
    kw = {**FAST, "strategies": [strategy], "epochs": epochs, "early_stopping": None}
    if strategy == "finetune":  # the classic start: random crops every epoch, no probe or check (test_lpft.py)
        kw.update(augment=True, head_init="random")
    split = zdata.load_data(data3)
    n_train, n_val = len(split.train), len(split.val)
    seen = _decodes(monkeypatch)
    real_train, in_train = compare_run.train, []

    def train(*args: Any, **kwargs: Any) -> Any:  # decodes while an entry is timed
        before = len(seen)
        result = real_train(*args, **kwargs)
        in_train.append(len(seen) - before)
        return result

    monkeypatch.setattr(compare_run, "train", train)
    shared = zoo_core.compare(["cmp_toy_a", "cmp_toy_b"], data3, out_dir=tmp_path / "shared", **kw)
    shared_decodes = list(seen)
    cache.clear_cache("all")  # nothing cached: the second compare decodes for itself
    seen.clear()
    plain = zoo_core.compare(["cmp_toy_a", "cmp_toy_b"], data3, out_dir=tmp_path / "plain", share_decoding=False,
                             **kw)
    plain_decodes = list(seen)

    if strategy == "feature-extraction":  # both backbones read the same decoded pixels
        assert len(shared_decodes) == n_train + n_val == len(set(shared_decodes))
        assert len(plain_decodes) == 2 * (n_train + n_val)
        assert in_train[:2] == [0, 0]  # decoded before the first entry's clock starts
    else:  # augmented training images are decoded every epoch; validation images once in all
        assert len(shared_decodes) == 2 * epochs * n_train + n_val
        assert len(plain_decodes) == 2 * epochs * n_train + 2 * (epochs + 1) * n_val
        assert in_train[:2] == [epochs * n_train] * 2
    pixels = [e for e in cache.cache_summary() if e["kind"] == "pixels"]
    assert pixels == []  # share_decoding=False wrote no pixel cache

    for a, b in zip(shared.entries, plain.entries):
        assert (a.backbone, a.status, b.status) == (b.backbone, "ok", "ok")
        assert a.val_acc == b.val_acc and a.val_loss == pytest.approx(b.val_loss, rel=1e-5, abs=1e-7)
        assert [h["val_loss"] for h in a.history] == pytest.approx([h["val_loss"] for h in b.history], rel=1e-5)
        wa = torch.load(Path(a.run_dir) / "best.pt", weights_only=True)["model"]
        wb = torch.load(Path(b.run_dir) / "best.pt", weights_only=True)["model"]
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_top5_is_reported_from_five_classes(tmp_path: Path, cmp_toys: None) -> None:
    data5 = make_folder(tmp_path / "data5", num_classes=5, per_class=5, size=32)
    board = zoo_core.compare("cmp_toy_a", data5, out_dir=tmp_path / "cmp", **FAST)
    (row,) = read_board(tmp_path / "cmp")["entries"]
    summary = json.loads((tmp_path / "cmp" / row["run_dir"] / "summary.json").read_text())
    assert row["val_top5"] == summary["metrics"]["val_top5"] == 1.0  # 5 classes: the true one is always in the top 5
    assert "top-5" in board.table().splitlines()[0] and "| top-5 |" in (tmp_path / "cmp" / "leaderboard.md").read_text()
