"""Runs stay inside their folders and reports show their own runs: run names, compare folders, output paths."""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers_cli import one_line, one_line_error, run
from helpers_images import make_folder
from PIL import Image
from torchvision.transforms import v2

import zoo_core
from zoo_core.cache import service, store
from zoo_core.cache.policy import PASS_ENV
from zoo_core.errors import ZooError
from zoo_core.stats import majority_baseline

FAST = {"weights": None, "image_size": 32, "progress": False}


@pytest.mark.parametrize("name", ["..", ".", "a/b", "/abs", "a\\b", ""])
def test_a_run_name_must_be_one_folder_inside_out_dir(tmp_path: Path, data3: Path, name: str, toys: None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "box" / "runs"
    out.mkdir(parents=True)
    (tmp_path / "box" / "config.json").write_text("precious")
    code, _, err = run(capsys, "train", "rank_good", "--data", data3, "--out-dir", out, "--run-name", name,
                       "--weights", "none", "--image-size", "32")
    assert code == 2 and "--run-name" in one_line_error(err)
    assert (tmp_path / "box" / "config.json").read_text() == "precious" and not any(out.iterdir())


def test_a_run_name_that_is_a_link_out_of_out_dir_is_refused(tmp_path: Path, data3: Path, toys: None) -> None:
    out, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "r").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ZooError, match="outside"):
        zoo_core.train("rank_good", data3, out_dir=out, run_name="r", **FAST)
    assert not any(elsewhere.iterdir())


def test_log_dir_runs_stay_inside_log_dir(tmp_path: Path) -> None:
    from zoo_core.training.config import TrainConfig, run_directory

    cfg = TrainConfig(data="d", out_dir=str(tmp_path / "o"), run_name="..", log="tensorboard",
                      log_dir=str(tmp_path / "tb"))
    with pytest.raises(ZooError, match="--run-name"):
        run_directory(cfg)


def test_output_paths_that_are_files_are_refused_before_any_work(tmp_path: Path, data3: Path, toys: None,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    for argv in (["train", "rank_good", "--data", data3, "--out-dir", a_file],
                 ["train", "rank_good", "--data", data3, "--out-dir", tmp_path / "o", "--log", "tensorboard",
                  "--log-dir", a_file],
                 ["compare", "rank_good", "--data", data3, "--out", a_file],
                 ["compare", "rank_good", "--data", data3, "--out", a_file / "sub"],
                 ["rank", "rank_good", "--data", data3, "--out", a_file],
                 ["lr-find", "rank_good", "--data", data3, "--out", a_file]):
        code, _, err = run(capsys, *argv, "--weights", "none", "--image-size", "32")
        assert code == 2 and str(a_file) in one_line_error(err), argv
    assert a_file.read_text() == "x"
    code, _, err = run(capsys, "predict", tmp_path / "no-run", "x.png", "--csv", tmp_path)
    assert code == 2 and "--csv" in one_line_error(err) and "is a folder" in err


def test_a_compare_folder_rebuilds_its_own_report_from_any_folder(tmp_path: Path, data3: Path, toys: None,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Two compares run from two folders, each with the same relative --out; each report rebuilt from the other
    folder (and from a copy) shows its own run's plots."""
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        monkeypatch.chdir(tmp_path / side)
        backbone = "rank_good" if side == "a" else "rank_weak"
        zoo_core.compare(backbone, data3, out_dir="cmp", **FAST)
        (row,) = json.loads(Path("cmp/leaderboard.json").read_text())["entries"]
        assert row["run_dir"] == f"runs/{backbone}-feature-extraction"
    for here, there, backbone in (("a", "b", "rank_weak"), ("b", "a", "rank_good")):
        monkeypatch.chdir(tmp_path / here)
        assert zoo_core.cli.main(["report", str(tmp_path / there / "cmp")]) == 0
        html = (tmp_path / there / "cmp" / "report.html").read_text()
        assert "is missing" not in html
        own = (tmp_path / there / "cmp" / "runs" / f"{backbone}-feature-extraction" / "confusion.png").read_bytes()
        other = next((tmp_path / here / "cmp" / "runs").iterdir()) / "confusion.png"
        assert own != other.read_bytes()
        assert base64.b64encode(own).decode() in html and base64.b64encode(other.read_bytes()).decode() not in html


# ---- the feature cache: off means in memory, the same result; orphans; a full disk --------------------------
def test_feature_extraction_without_the_disk_cache_is_the_same_fit_in_memory(
        tmp_path: Path, data3: Path, toys: None, zoo_home: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    on = zoo_core.train("rank_good", data3, out_dir=tmp_path, run_name="on", **FAST)
    shutil.rmtree(zoo_home.zoo_cache, ignore_errors=True)
    calls = count_extractions(monkeypatch)
    off = zoo_core.train("rank_good", data3, out_dir=tmp_path, run_name="off", cache_features=False, **FAST)
    assert off.metrics["val_acc"] == on.metrics["val_acc"] and off.metrics["val_loss"] == pytest.approx(
        on.metrics["val_loss"], abs=1e-6)
    assert len(off.history) == 1 and off.config["head_fit"] and off.config["feature_cache"] is False
    assert [key for key in calls] == [None, None]  # train and val, once each, in memory
    assert not (zoo_home.zoo_cache / "features").exists() or not any((zoo_home.zoo_cache / "features").iterdir())
    monkeypatch.setenv(PASS_ENV, "bogus")  # the pinned pass is read on this path too
    with pytest.raises(ZooError, match=PASS_ENV):
        zoo_core.train("rank_good", data3, out_dir=tmp_path, run_name="pinned", cache_features=False, **FAST)


def count_extractions(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The ``key`` of every call to the feature extraction from now on."""
    calls: list[Any] = []
    real = service.extract_features

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("key"))
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "extract_features", counting)
    return calls


def test_an_unfinished_entry_of_a_killed_process_is_removed_by_the_next_writer(tmp_path: Path) -> None:
    folder = tmp_path / "features"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = folder / f".tmp-abc-{int(dead.stdout)}@{socket.gethostname()}-0123abcd"
    old_style = folder / f".tmp-abc-{int(dead.stdout)}-89abcdef"
    mine = folder / f".tmp-abc-{os.getpid()}@{socket.gethostname()}-00000000"
    other_host = folder / f".tmp-abc-{int(dead.stdout)}@another-host-11111111"
    for d in (orphan, old_style, mine, other_host):
        d.mkdir()
        (d / "features.npy").write_bytes(b"x" * 100)
    writer = store.EntryWriter("features", "k", root=tmp_path)
    writer.abort()
    assert sorted(p.name for p in folder.iterdir()) == sorted([mine.name, other_host.name])


def test_a_full_disk_names_the_margin_and_the_real_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = store.EntryWriter("features", "k", root=tmp_path)
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: SimpleNamespace(free=10 << 20))
    with pytest.raises(ZooError) as info:
        writer.open_array("features.npy", (1000, 512), "float32")
    writer.abort()
    msg = one_line(info.value)
    assert "1.95 MiB" in msg and "64.00 MiB" in msg and "margin" in msg and "10.00 MiB" in msg, msg


# ---- values checked before any work, one rule each --------------------------------------------------------------
@pytest.mark.parametrize("argv, said", [
    (["lr-find", "rank_good", "--data", "D", "--steps", "0"], "--steps must be an integer >= 2, got 0"),
    (["lr-find", "rank_good", "--data", "D", "--steps", "-5"], "--steps must be an integer >= 2, got -5"),
    (["lr-find", "rank_good", "--data", "D", "--start-lr", "1", "--end-lr", "0.1"], "--start-lr (1) must be below"),
    (["lr-find", "rank_good", "--data", "D", "--end-lr", "-1"], "--end-lr must be a number > 0, got -1.0"),
    (["lr-find", "rank_good", "--data", "D", "--start-lr", "nan"], "--start-lr must be a number > 0, got nan"),
    (["predict", "RUN", "x.png", "--topk", "0"], "--topk must be a positive integer, got 0"),
    (["predict", "RUN", "x.png", "--topk", "-1"], "--topk must be a positive integer, got -1"),
    (["export", "RUN", "--tolerance", "-1"], "--tolerance must be a number >= 0, got -1.0"),
    (["export", "RUN", "--tolerance", "nan"], "--tolerance must be a number >= 0, got nan"),
    (["export", "RUN", "--tolerance", "inf"], "--tolerance must be a number >= 0, got inf"),
    (["train", "rank_good", "--data", "D", "--val-fraction", "0"], "--val-fraction must be a number in (0, 1), got 0.0"),
    (["compare", "rank_good", "--data", "D", "--select-keep", "0.3"], "--select-keep only apply with --select K"),
    (["compare", "rank_good", "--data", "D", "--select-budget", "10"], "--select-budget only apply with --select K"),
])
def test_bad_values_are_one_line_before_any_work(argv: list[str], said: str, tmp_path: Path, data3: Path,
                                                 toys: None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(data3) if a == "D" else str(tmp_path / "run") if a == "RUN" else a for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2 and said in one_line_error(err)
    assert not (tmp_path / "run").exists() and not Path("lr-find").exists()


# ---- damaged or hand-edited files: one line naming the file and the field ------------------------------------
BOARD = {"data": "d", "classes": ["a"], "entries": [{"rank": 1, "backbone": "b", "strategy": "feature-extraction",
                                                      "status": "ok", "val_acc": 0.5, "run_dir": "runs/b"}]}


@pytest.mark.parametrize("name, text, said", [
    ("leaderboard.json", "{not json", "leaderboard.json is not valid JSON"),
    ("leaderboard.json", "[1, 2]", "leaderboard.json: the file must be an object, not a list"),
    ("leaderboard.json", json.dumps({"entries": {"a": 1}}), "field 'entries' must be a list"),
    ("leaderboard.json", json.dumps({"entries": [{**BOARD["entries"][0], "val_acc": "high"}]}),
     "entries[0] field 'val_acc' must be a number"),
    ("leaderboard.json", json.dumps({"entries": [{"rank": 1}]}), "entries[0] has no field 'backbone'"),
    ("ranking.json", json.dumps({"entries": [{"backbone": "b", "score": [1]}]}),
     "entries[0] field 'score' must be a number"),
    ("ranking.json", "", "ranking.json is not valid JSON"),
])
def test_a_damaged_compare_or_rank_file_is_one_line_in_report(tmp_path: Path, name: str, text: str, said: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / name).write_text(text)
    code, _, err = run(capsys, "report", tmp_path)
    assert code == 2 and said in one_line_error(err) and str(tmp_path / name) in err


@pytest.mark.parametrize("config, said", [
    ([1, 2], "config.json: the file must be an object, not a list"),
    ({"classes": ["a"]}, "config.json: has no field 'train'"),
    ({"train": {}, "data_source": 3}, "field 'data_source' must be a text, not a number"),
    ({"train": [], "data_source": "d"}, "field 'train' must be an object, not a list"),
])
def test_a_damaged_config_json_is_one_line_on_resume_and_export(tmp_path: Path, data3: Path, toys: None,
                                                               config: Any, said: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    result = zoo_core.train("rank_good", data3, out_dir=tmp_path, run_name="r", **FAST)
    (result.run_dir / "config.json").write_text(json.dumps(config))
    for argv in (["train", "--resume", result.run_dir, "--epochs", "3"], ["export", result.run_dir]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and said in one_line_error(err) and str(result.run_dir / "config.json") in err, argv


def test_a_renamed_column_of_val_predictions_is_one_line_on_export(tmp_path: Path, data3: Path, toys: None,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    result = zoo_core.train("rank_good", data3, out_dir=tmp_path, run_name="r", **FAST)
    table = result.run_dir / "val_predictions.csv"
    table.write_text(table.read_text().replace("item", "file", 1))
    code, _, err = run(capsys, "export", result.run_dir)
    assert code == 2 and "val_predictions.csv has no column 'item'" in one_line_error(err)


# ---- folds that lack a class; the majority-class baseline beside every leaderboard and ranking ------------------
def test_folds_lacking_a_class_are_said_and_the_majority_baseline_is_printed(tmp_path: Path, toys: None) -> None:
    data = make_folder(tmp_path / "data", counts={"big": 16, "s1": 2, "s2": 2})
    board = zoo_core.compare("rank_good", data, out_dir=tmp_path / "cmp", folds=4, **FAST)
    doc = json.loads((tmp_path / "cmp" / "leaderboard.json").read_text())
    assert doc["majority_baseline"] == board.majority_baseline == 3 / 5  # val: 3 big, 1 s1, 1 s2
    (row,) = doc["entries"]
    assert "folds hold no image of class(es) s1, s2" in row["stats_note"]
    for text in (str(board), (tmp_path / "cmp" / "leaderboard.md").read_text(),
                 (tmp_path / "cmp" / "report.html").read_text()):
        assert "majority-class baseline: 0.6000 top-1" in text
    ranking = zoo_core.rank("rank_good", data, out_dir=tmp_path / "rank", folds=2, **FAST)
    assert ranking.majority_baseline == pytest.approx(13 / 15)
    for text in (ranking.table(), (tmp_path / "rank" / "ranking.md").read_text(),
                 (tmp_path / "rank" / "report.html").read_text()):
        assert "majority-class baseline: 0.8667 top-1" in text
    assert json.loads((tmp_path / "rank" / "ranking.json").read_text())["majority_baseline"] == pytest.approx(13 / 15)


def test_majority_baseline() -> None:
    assert majority_baseline([0, 0, 1]) == pytest.approx(2 / 3)
    assert majority_baseline([1, 1, 0], train_labels=[0, 0, 1]) == pytest.approx(1 / 3)
    assert majority_baseline([]) == 0.0


def test_the_export_sidecar_says_how_the_resize_rounds(tmp_path: Path, data3: Path, toys: None) -> None:
    result = zoo_core.train("rank_good", data3, out_dir=tmp_path, run_name="r", **FAST)
    exported = zoo_core.export(result.run_dir, format="torchscript")
    pre = json.loads(Path(str(exported.path) + ".json").read_text())["preprocessing"]
    assert pre["resize_longer_side"] == "floor(resize_size * long / short)"
    assert any("floor(" in step for step in pre["steps"]) and "halves to even" in " ".join(pre["steps"])
    # the rule is the one the run's resize follows (torchvision's Resize of the shorter side)
    s = pre["resize_size"]
    for size in ((50, 37), (37, 50), (101, 64), (45, 31), (77, 40), (40, 71)):
        long, short = max(size), min(size)
        resized = v2.Resize(s, antialias=True)(Image.new("RGB", size))
        assert max(resized.size) == math.floor(s * long / short) and min(resized.size) == s
