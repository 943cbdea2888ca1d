"""The ``zoo`` commands that train and use models, called in-process through ``cli.main(argv)``:
train, predict, compare, lr-find and cache; bad input is one line on stderr and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_cli import one_line_error, run
from helpers_images import assert_png, write_image

TINY = ["--weights", "none", "--image-size", "32"]
CLASSES = ["class0", "class1", "class2"]
DATA3_PER_CLASS = 10


pytestmark = pytest.mark.usefixtures("skip_run_plots")  # compare's own plots still draw


def test_train_predict_and_cache(tmp_path: Path, data3: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    code, out, err = run(capsys, "train", "timm/test_resnet", "--data", data3, *TINY, "--out-dir", runs,
                         "--run-name", "r1", "--json")
    assert code == 0, err
    result = json.loads(out)
    run_dir = runs / "r1"
    assert result["run_dir"] == str(run_dir) and result["best_epoch"] == 1
    for name in ("config.json", "summary.json", "best.pt", "metrics.jsonl", "per_class.csv"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert result["val_acc"] == summary["metrics"]["val_acc"] and 0 <= result["val_acc"] <= 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["weights"] is None and config["data_config"]["input_size"] == [3, 32, 32]
    assert "zoo train: done." in err

    # predict: top-k labels per image, most probable first
    images = [data3 / "class0" / "img00.png", write_image(tmp_path / "new" / "x.png", cls=1, index=99)]
    code, out, err = run(capsys, "predict", run_dir, *images, "-k", "2", "--json")
    assert code == 0, err
    preds = json.loads(out)
    assert [p["image"] for p in preds] == [str(i) for i in images]
    for p in preds:
        probs = [t["probability"] for t in p["top"]]
        assert len(p["top"]) == 2 and {t["label"] for t in p["top"]} <= set(CLASSES)
        assert probs == sorted(probs, reverse=True) and all(0 <= q <= 1 for q in probs) and sum(probs) <= 1 + 1e-6
    code, out, _ = run(capsys, "predict", run_dir, images[0], "--topk", "5", "--json")  # k > classes: all 3
    (p,) = json.loads(out)
    assert sorted(t["label"] for t in p["top"]) == CLASSES
    assert sum(t["probability"] for t in p["top"]) == pytest.approx(1, abs=1e-5)
    code, out, _ = run(capsys, "predict", run_dir, *images)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["IMAGE", "RANK", "LABEL", "PROBABILITY"] and len(lines) == 2 + 2 * 3
    assert lines[2].split()[:2] == [str(images[0]), "1"]
    # predict: bad input is one line naming the fault
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    code, _, err = run(capsys, "predict", run_dir, not_image)
    assert code == 2 and "cannot read image" in one_line_error(err) and str(not_image) in err
    code, _, err = run(capsys, "predict", tmp_path / "no-such-run", images[0])
    assert code == 2 and str(tmp_path / "no-such-run") in one_line_error(err)
    code, _, err = run(capsys, "predict", tmp_path / "new", images[0])  # a folder, but not a run
    assert code == 2 and "holds no best.pt" in one_line_error(err)

    # cache: the feature-extraction run cached its train and val features
    code, out, _ = run(capsys, "cache", "info", "--json")
    entries = json.loads(out)
    assert code == 0
    assert sorted((e["kind"], e["backbone"], e["split"]) for e in entries) == [
        ("features", "timm/test_resnet", "train"), ("features", "timm/test_resnet", "val")]
    assert {e["n"] for e in entries} == {24, 6} and {e["dim"] for e in entries} == {96}
    code, out, err = run(capsys, "cache", "info")
    header = out.splitlines()[0].split()
    assert code == 0 and header[:6] == ["KIND", "BACKBONE", "SPLIT", "N", "DIM", "SIZE_BYTES"]
    assert "cache root:" in err
    code, out, _ = run(capsys, "cache", "clear", "pixels")  # nothing of that kind: features stay
    assert code == 0 and out.startswith("freed 0.0 MiB")
    assert len(json.loads(run(capsys, "cache", "info", "--json")[1])) == 2
    feature_dir = Path(entries[0]["path"]).parent
    code, out, _ = run(capsys, "cache", "clear")
    assert code == 0 and out.startswith("freed ") and not feature_dir.exists()
    code, out, _ = run(capsys, "cache", "info")
    assert code == 0 and out.strip() == "cache is empty"
    code, _, err = run(capsys, "cache", "clear", "everything")
    assert code == 2 and "invalid choice" in err


def test_compare_json_and_exit_status(tmp_path: Path, data3: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "cmp"
    code, out, err = run(capsys, "compare", "timm/test_resnet", "--data", data3, *TINY, "--out", out_dir, "--json")
    assert code == 0, err
    (row,) = json.loads(out)  # stdout is only the JSON
    assert row["backbone"] == "timm/test_resnet" and row["status"] == "ok" and row["weights"] == "RANDOM INIT"
    board = json.loads((out_dir / "leaderboard.json").read_text())["entries"]
    assert board == json.loads(out)
    summary = json.loads((out_dir / row["run_dir"] / "summary.json").read_text())
    assert row["val_acc"] == summary["metrics"]["val_acc"]
    for name in ("leaderboard.md", "leaderboard.csv", "accuracy_vs_speed.png"):
        assert (out_dir / name).is_file()

    code, out, err = run(capsys, "compare", "timm/test_resnet", "--data", data3, *TINY, "--out", out_dir,
                         "--folds", "3")
    assert code == 0 and "reused" in out and "top-1" in out.splitlines()[0]  # terminal table on stdout …
    assert out.splitlines()[0] not in err and "[feature-extraction]: reusing" in err  # … once; progress: stderr
    (row,) = json.loads((out_dir / "leaderboard.json").read_text())["entries"]
    assert row["folds_k"] == 3 and len(row["folds_top1"]) == 3 and "folds top-1" in out.splitlines()[0]
    code, _, err = run(capsys, "compare", "timm/test_resnet", "--data", data3, *TINY, "--out", out_dir,
                       "--folds", "1")
    assert code == 2 and one_line_error(err) and "--folds K" in err

    missing = tmp_path / "missing.pth"  # every entry fails: exit status 1, the leaderboard says why
    code, out, err = run(capsys, "compare", "timm/test_resnet", "--data", data3, "--weights", missing,
                         "--image-size", "32", "--out", tmp_path / "bad", "--json")
    (row,) = json.loads(out)
    assert code == 1 and row["status"] == "failed" and "WeightsError" in row["error"] and str(missing) in row["error"]


def test_lr_find(tmp_path: Path, data3: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "lr-find", "timm/test_resnet", "--data", data3, *TINY, "--steps", "6",
                         "--batch-size", "8", "--out", tmp_path / "lr", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert 1e-7 <= res["suggestion"] <= 1.0 and res["plot"] == str(tmp_path / "lr" / "lr_find.png")
    assert_png(Path(res["plot"]))
    saved = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert saved["suggestion"] == res["suggestion"] and 2 <= len(saved["lrs"]) <= 6
    assert saved["lrs"] == sorted(saved["lrs"])


@pytest.mark.parametrize("argv, needle", [
    (["train", "timm/test_resnet", "--data", "{tmp}/no-such-folder"], "Data folder not found: {tmp}/no-such-folder"),
    (["train", "timm/test_resnet"], "--data PATH_OR_NAME"),
    (["train", "resnet_18", "--data", "{data}", "--weights", "none"], "resnet18"),
    (["train", "timm/test_resnet", "--data", "{data}", "--optimizer", "lion"], "--optimizer must be 'adamw' or 'sgd', got 'lion'"),
    (["train", "timm/test_resnet", "--data", "{data}", "--epochs", "0"], "--epochs must be a positive integer, got 0"),
    (["train", "timm/test_resnet", "--data", "{data}", "--precision", "fp8"], "(--precision)"),
    (["train", "timm/test_resnet", "--data", "{data}", "--weights", "{tmp}/w.pth"], "{tmp}/w.pth"),
    (["compare", "--data", "{data}"], "no backbones given"),
    (["compare", "nothing_like_this*", "--data", "{data}"], "matches no backbone"),
    (["compare", "timm/test_resnet", "--data", "{data}", "--strategy", "fast"], "unknown strategy 'fast'"),
    (["lr-find", "timm/test_resnet", "--data", "{tmp}/nothing"], "{tmp}/nothing"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, data3: Path, capsys: pytest.CaptureFixture[str],
                                          argv: list[str], needle: str) -> None:
    fill = {"tmp": str(tmp_path), "data": str(data3)}
    code, out, err = run(capsys, *[a.format(**fill) for a in argv], "--out-dir" if argv[0] == "train" else "--out",
                         tmp_path / "out")
    assert code == 2 and out == ""
    assert needle.format(**fill) in one_line_error(err)
    assert not (tmp_path / "out").exists() or argv[0] == "compare"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "train", "timm/test_resnet", "--data", "x", "--lr", "fast")
    assert code == 2 and "--lr takes a number or 'auto', not 'fast'" in err
    code, _, err = run(capsys, "predict", "somewhere")
    assert code == 2 and "the following arguments are required: IMAGE" in err
