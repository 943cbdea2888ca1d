"""``zoo_core.rundir`` and the atomic writers: a failed write keeps the old file and leaves no temporary one,
metrics round-trip as JSON lines and CSV, checkpoints load weights-only and a bad one is one clear line."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from zoo_core import ZooError
from zoo_core.rundir import RunDir, load_checkpoint, save_checkpoint
from zoo_core.util import atomic_write, atomic_write_text


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    atomic_write_text(target, "old\n")

    def half_then_fail(f: Any) -> None:
        f.write(b"new but only ha")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old\n" and leftovers(tmp_path) == []

    run = RunDir(tmp_path)
    run.save("best.pt", {"model": {"w": torch.ones(2)}})
    with pytest.raises(Exception):  # noqa: B017 - torch.save of a lambda: whatever pickle raises
        run.save("best.pt", {"model": lambda: None})
    assert torch.equal(load_checkpoint(run.file("best.pt"))["model"]["w"], torch.ones(2))
    assert leftovers(tmp_path) == []


def test_metrics_jsonl_and_csv_round_trip_and_are_rewritten_whole(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    history = [{"epoch": 1, "train_loss": 1.5, "val_loss": 1.25, "lr": None},
               {"epoch": 2, "train_loss": 0.75, "val_loss": 0.5, "lr": 0.001, "val_top5": 1.0}]
    run.write_metrics(history)
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == history
    with open(run.path / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["epoch", "train_loss", "val_loss", "lr", "val_top5"]  # union, first-seen order
    assert [float(r["val_loss"]) for r in table] == [1.25, 0.5] and table[0]["val_top5"] == ""
    run.write_metrics(history[:1])  # a resumed run rewrites the file, never appends
    assert len((run.path / "metrics.jsonl").read_text().splitlines()) == 1
    run.write_table("per_class.csv", [])
    assert not (run.path / "per_class.csv").exists()
    assert run.read_json("metrics.jsonl") == history[0]  # one line is one JSON document
    quiet = RunDir(tmp_path / "rank1", enabled=False)  # other ranks under torchrun write nothing
    quiet.write_json("config.json", {})
    quiet.write_metrics(history)
    assert not (tmp_path / "rank1").exists()


def test_checkpoints_load_weights_only_and_bad_files_are_one_clear_line(tmp_path: Path) -> None:
    state = {"model": {"w": torch.arange(4.0)}, "classes": ["a", "b"], "epoch": 3}
    save_checkpoint(tmp_path / "ok.pt", state)
    back = load_checkpoint(tmp_path / "ok.pt")
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["classes"] == ["a", "b"]

    torch.save({"model": SimpleNamespace(x=1)}, tmp_path / "pickled.pt")  # arbitrary objects: refused
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not a zip at all")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:40])
    for name, hint in [("missing.pt", "does not exist"), ("pickled.pt", "cannot read checkpoint"),
                       ("corrupt.pt", "cannot read checkpoint"), ("truncated.pt", "cannot read checkpoint")]:
        with pytest.raises(ZooError) as info:
            load_checkpoint(tmp_path / name)
        msg = str(info.value)
        assert hint in msg and str(tmp_path / name) in msg and "\n" not in msg, name
