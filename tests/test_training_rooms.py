"""Direct tests of the rooms the trainer is built from: strategies (schedules, optimizer groups, LR
schedule), the run directory (atomic files, metrics, checkpoints), inference from a run, freezing, and
the training package's own seams (build_run, checkpoint dicts, no import cycles).

Tiny hand-made models and 32–60 px images; no training run longer than one step.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from helpers_images import make_folder
from PIL import Image
from torch import nn

import zoo_core
from zoo_core import ZooError, strategies
from zoo_core.backbones.adapter import DataConfig
from zoo_core.backbones.freezing import (
    StageError,
    count_parameters,
    default_stages,
    freeze_stages,
    stages_from_patterns,
    unfreeze_all,
)
from zoo_core.rundir import RunDir, load_checkpoint, save_checkpoint
from zoo_core.training import TrainConfig, build_run, loop
from zoo_core.training.checkpoint import checkpoint
from zoo_core.util import atomic_write, atomic_write_text

ZOO_CORE = Path(zoo_core.__file__).parent


class Tiny(nn.Module):
    """Two stages (conv + BatchNorm each, a Dropout in the second) and a linear head ``fc``."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block(self.stem(x))).flatten(1))


STEM_PARAMS = 3 * 4 * 9 + 4 + 2 * 4  # conv weight + bias, BN weight + bias
BLOCK_PARAMS = 4 * 8 * 9 + 8 + 2 * 8
HEAD_PARAMS = 8 * 3 + 3


def tiny_adapter(stages: list) -> SimpleNamespace:
    """What strategies.apply_stages needs of an adapter: ``freeze(model, k)``."""
    return SimpleNamespace(freeze=lambda model, k: freeze_stages(model, stages, "fc", k))


def buffers(model: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in model.named_buffers() if n.startswith(prefix)}


def train_step(model: nn.Module, seed: int = 0) -> None:
    """One SGD step on random data over the trainable parameters (model in train mode)."""
    torch.manual_seed(seed)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    loss = nn.functional.cross_entropy(model(torch.randn(6, 3, 8, 8) * 3 + 1), torch.tensor([0, 1, 2] * 2))
    opt.zero_grad()
    loss.backward()
    opt.step()


# ---- zoo_core.strategies ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, expected", [
    ("feature-extraction", [0, 0, 0, 0]),
    ("finetune", [2, 2, 2, 2]),  # trainable_stages=2 throughout
    ("full", [5, 5, 5, 5]),
    ("gradual", [0, 0, 5, 5]),  # head_epochs=2, then every stage
])
def test_each_strategy_trains_its_stages_per_epoch(name: str, expected: list[int]) -> None:
    s = strategies.get_strategy(name)
    assert [s.trainable_stages(e, 5, 2, 2) for e in range(4)] == expected
    assert s.backbone_frozen_throughout() is (name == "feature-extraction")
    assert s.default_augment is (name != "feature-extraction")


def test_finetune_caps_at_the_stage_count_and_aliases_resolve() -> None:
    assert strategies.get_strategy("finetune").trainable_stages(0, 3, 7, 1) == 3
    assert strategies.get_strategy("linear").name == "feature-extraction"
    assert strategies.get_strategy("fine-tune").name == "finetune"
    assert strategies.get_strategy("freeze-unfreeze").name == "gradual"
    with pytest.raises(ZooError) as info:
        strategies.get_strategy("sideways")
    assert "sideways" in str(info.value) and all(n in str(info.value) for n in strategies.STRATEGIES)


def test_apply_stages_freezes_all_but_the_top_k_or_unfreezes_everything() -> None:
    model = Tiny()
    stages = default_stages(model, "fc")
    adapter = tiny_adapter(stages)
    strategies.apply_stages(model, adapter, 1, len(stages))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith(("block.", "fc."))}
    strategies.apply_stages(model, adapter, len(stages), len(stages))  # k >= n: everything trains
    assert all(p.requires_grad for p in model.parameters())


def test_param_groups_lrs_decay_per_stage_towards_the_input() -> None:
    model = Tiny()
    stages = default_stages(model, "fc")
    assert [s for s, _ in stages] == ["stem", "block"]
    groups = strategies.param_groups(model, stages, "fc", lr=0.1, weight_decay=0.05, backbone_lr_mult=0.5,
                                     layer_decay=0.2)
    lrs = {(g["name"], g["weight_decay"]): g["lr"] for g in groups}
    assert lrs == pytest.approx({("head", 0.05): 0.1, ("head", 0.0): 0.1, ("block", 0.05): 0.05,
                                 ("block", 0.0): 0.05, ("stem", 0.05): 0.01, ("stem", 0.0): 0.01})
    assert all(g["initial_lr"] == g["lr"] for g in groups)
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    assert decayed == {id(model.stem[0].weight), id(model.block[0].weight), id(model.fc.weight)}  # no norms/biases

    # parameters outside every stage train at the plain backbone multiplier; frozen ones are left out
    only_block = [s for s in stages if s[0] == "block"]
    model.block[0].weight.requires_grad_(False)
    groups = strategies.param_groups(model, only_block, "fc", lr=0.1, weight_decay=0.0, backbone_lr_mult=0.5,
                                     layer_decay=0.2)
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["lr"] == pytest.approx(0.05) and by_name["block"]["lr"] == pytest.approx(0.05)
    assert id(model.block[0].weight) not in {id(p) for g in groups for p in g["params"]}


def test_warmup_cosine_drives_set_lr_and_the_loop_schedule() -> None:
    f = strategies.warmup_cosine(30, 5, floor=0.1)
    assert [f(s) for s in range(5)] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
    assert f(5) == 1.0 and f(30) == pytest.approx(0.1) and f(1000) == pytest.approx(0.1)
    assert f(5 + 25 // 2) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 12 / 25)))
    model = Tiny()
    opt = strategies.make_optimizer(strategies.param_groups(
        model, default_stages(model, "fc"), "fc", lr=0.2, weight_decay=0.0, backbone_lr_mult=0.5, layer_decay=1.0),
        "sgd", momentum=0.5)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.5
    strategies.set_lr(opt, f(2))
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([0.1 * 3 / 6, 0.2 * 3 / 6])
    # the epoch loop: warm-up over warmup_epochs of the run's steps, cosine over all of them
    lr_at = loop.lr_schedule(TrainConfig(warmup_epochs=0.5), steps_per_epoch=10, epochs=3)
    reference = strategies.warmup_cosine(30, 5)
    assert [lr_at(s) for s in range(31)] == [reference(s) for s in range(31)]
    with pytest.raises(ZooError, match="'adamw' or 'sgd'"):
        strategies.make_optimizer([], "lion")


# ---- zoo_core.rundir --------------------------------------------------------------------------------------
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


# ---- zoo_core.inference -----------------------------------------------------------------------------------
ODD = DataConfig(input_size=(3, 32, 32), mean=(0.2, 0.3, 0.4), std=(0.5, 0.6, 0.7), crop_pct=0.8)  # resize 40


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory with a best.pt of a random resnet18 (3 classes) and the ODD preprocessing."""
    torch.manual_seed(0)
    model = zoo_core.create("resnet18", num_classes=3, weights=None)
    save_checkpoint(tmp_path / "run" / "best.pt", {
        "model": model.state_dict(), "classes": ["cat", "dog", "owl"], "backbone": "resnet18",
        "data_config": ODD.to_dict(), "num_classes": 3})
    return tmp_path / "run"


def test_load_and_predict_give_class_names_and_probabilities(run_dir: Path, tmp_path: Path) -> None:
    paths = [p for c in make_folder(tmp_path / "imgs", num_classes=2, per_class=2, size=48).iterdir()
             for p in sorted(c.iterdir())]
    clf = zoo_core.load(run_dir)
    assert clf.classes == ["cat", "dog", "owl"] and clf.data_config == ODD and not clf.training
    out = zoo_core.predict(run_dir, paths, topk=3)
    with torch.no_grad():
        probs = clf(clf.preprocess(paths)).softmax(1)
    for row, path, p in zip(out, paths, probs):
        ps = [t["probability"] for t in row["top"]]
        assert row["image"] == str(path) and sorted(t["label"] for t in row["top"]) == clf.classes
        assert sum(ps) == pytest.approx(1.0, abs=1e-5) and ps == sorted(ps, reverse=True)
        assert row["top"][0]["label"] == clf.classes[int(p.argmax())]
    assert [len(r) for r in clf.predict(paths, topk=10)] == [3] * len(paths)  # k capped at the class count


def test_preprocessing_is_the_data_config_of_the_run(run_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)  # shorter side already at resize size 40
    Image.fromarray(rgb).save(tmp_path / "wide.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")  # mode L → RGB
    batch = zoo_core.load(run_dir).preprocess([tmp_path / "wide.png", tmp_path / "gray.png"])
    assert batch.shape == (2, *ODD.input_size) and batch.dtype == torch.float32
    mean, std = torch.tensor(ODD.mean)[:, None, None], torch.tensor(ODD.std)[:, None, None]
    crop = torch.from_numpy(rgb[4:36, 14:46]).permute(2, 0, 1).float()  # center crop 32×32 of 40×60
    assert torch.allclose(batch[0], (crop / 255 - mean) / std, atol=1e-5)
    gray = crop[:1].expand(3, -1, -1)
    assert torch.allclose(batch[1], (gray / 255 - mean) / std, atol=1e-5)


def test_load_rejects_folders_and_checkpoints_that_are_not_runs(tmp_path: Path) -> None:
    with pytest.raises(ZooError, match="no best.pt or last.pt"):
        zoo_core.load(tmp_path)
    save_checkpoint(tmp_path / "x.pt", {"model": {}})
    with pytest.raises(ZooError, match="lacks 'classes'"):
        zoo_core.load(tmp_path / "x.pt")


# ---- zoo_core.backbones.freezing --------------------------------------------------------------------------------------
def test_frozen_stage_keeps_bn_statistics_and_weights_through_a_train_step() -> None:
    model = Tiny()
    stages = default_stages(model, "fc")
    freeze_stages(model, stages, "fc", trainable_stages=1)
    assert count_parameters(model) == (STEM_PARAMS + BLOCK_PARAMS + HEAD_PARAMS, BLOCK_PARAMS + HEAD_PARAMS)
    stem_before, block_before = buffers(model, "stem."), buffers(model, "block.")
    stem_weight = model.stem[0].weight.detach().clone()
    train_step(model)
    assert not model.stem[1].training and model.block[1].training and model.block[3].training
    assert all(torch.equal(stem_before[n], b) for n, b in buffers(model, "stem.").items())
    assert torch.equal(model.stem[0].weight, stem_weight)
    assert not torch.equal(block_before["block.1.running_mean"], model.block[1].running_mean)

    unfreeze_all(model)
    assert count_parameters(model)[1] == count_parameters(model)[0]
    train_step(model, seed=1)
    assert model.stem[1].training
    assert not torch.equal(stem_before["stem.1.running_mean"], model.stem[1].running_mean)


def test_freeze_stage_counts_and_stages_from_patterns() -> None:
    model = Tiny()
    stages = default_stages(model, "fc")
    assert count_parameters(freeze_stages(model, stages, "fc", 0))[1] == HEAD_PARAMS
    assert count_parameters(freeze_stages(model, stages, "fc", -1))[1] == count_parameters(model)[0]
    assert count_parameters(freeze_stages(model, stages, "fc", 5))[1] == count_parameters(model)[0]

    patterns = [("conv", r"stem\.0"), ("norm", r"stem\.1"), ("unused", r"nothing")]
    with pytest.raises(StageError, match=r"match no stage pattern: block\.0\.weight.*block_stages"):
        stages_from_patterns(model, patterns, "fc")  # leftovers are an error, never a hidden stage
    split = stages_from_patterns(model, patterns + [("other", r"nothing")], "fc", unmatched="other")
    by_name = dict(split)
    assert [s for s, _ in split] == ["conv", "norm", "other"]  # empty stages dropped, leftovers where asked
    assert set(by_name["conv"]) == {"stem.0", "stem.0.weight", "stem.0.bias"}
    assert {"stem.1.running_mean", "stem.1.num_batches_tracked", "stem.1.weight"} <= set(by_name["norm"])
    assert "block.1.running_var" in by_name["other"] and "block.0.weight" in by_name["other"]
    members = {n for _, names in split for n in names}
    assert not any(n.startswith("fc") for n in members)  # the head is never a stage
    assert members & {"block.2", "block.3", "pool"} == {"block.2", "block.3", "pool"}  # with their stage


# ---- zoo_core.training: build_run, checkpoint dicts, import graph -----------------------------------------
def test_build_run_resolves_without_writing_or_changing_the_config(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "data", num_classes=2, per_class=5, size=32)
    cfg = TrainConfig(backbone="resnet18", strategy="linear", weights=None, image_size=32, lr="0.01",
                      progress=False, num_workers=0, device="cpu", precision="fp32")
    state = build_run(cfg, data)
    assert cfg.strategy == "linear" and cfg.lr == "0.01"  # the caller's config is left alone
    assert state.cfg.strategy == "feature-extraction" and state.cfg.lr == 0.01
    assert state.use_cache and state.head_fit and state.lr is None and state.epochs is None
    assert state.run is None and list(tmp_path.iterdir()) == [tmp_path / "data"]
    assert state.record["lr"] is None and state.record["stages"][-1] == "layer4" and state.record["head"] == "fc"
    e2e = build_run(TrainConfig(**{**vars(cfg), "strategy": "finetune", "epochs": 2}), data)
    assert not e2e.use_cache and e2e.augment and e2e.lr == 0.01 and e2e.epochs == 2
    ck = checkpoint(e2e, {"w": torch.zeros(1)}, epoch=1)
    assert set(ck) == {"model", "classes", "backbone", "strategy", "data_config", "num_classes", "config", "epoch"}
    assert ck["strategy"] == "finetune" and ck["config"]["lr"] == 0.01 and ck["data_config"]["input_size"] == [3, 32, 32]


def _module_imports(path: Path, name: str) -> set[str]:
    """zoo_core modules ``name`` imports at module level (imports inside functions not counted)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            mod = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # `from . import x` imports the module x
    return out


def test_zoo_core_module_imports_form_no_cycle() -> None:
    files = {("zoo_core." + ".".join(p.relative_to(ZOO_CORE).with_suffix("").parts)).removesuffix(".__init__"): p
             for p in ZOO_CORE.rglob("*.py")}
    graph = {m: {d for d in _module_imports(p, m) if d in files and d != m} for m, p in files.items()}
    assert "zoo_core.training.setup" in graph["zoo_core.training.lrfind"]  # the graph is read at all
    done: set[str] = set()

    def visit(m: str, trail: list[str]) -> None:
        if m in trail:
            raise AssertionError("import cycle: " + " → ".join(trail[trail.index(m):] + [m]))
        if m in done:
            return
        for d in sorted(graph[m]):
            if not m.startswith(d + "."):  # a submodule's own packages load first anyway
                visit(d, trail + [m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])


@pytest.mark.parametrize("kw", [{}, {"strategy": "finetune", "epochs": 1}], ids=["cached-head-fit", "end-to-end"])
def test_every_run_writes_its_per_image_validation_predictions(tmp_path: Path, kw: dict, skip_run_plots) -> None:
    data = make_folder(tmp_path / "data", num_classes=3, per_class=8)
    result = zoo_core.train("resnet18", data, out_dir=str(tmp_path / "runs"), weights=None, image_size=32,
                            batch_size=8, progress=False, **kw)
    rows = list(csv.DictReader((result.run_dir / "val_predictions.csv").open()))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert len(rows) == sum(map(sum, summary["confusion_matrix"])) == 6
    assert all((data / r["item"]).is_file() and r["item"].split(os.sep)[0] == r["target"] for r in rows)
    assert len({r["item"] for r in rows}) == len(rows)
    for r in rows:
        assert 0 < float(r["p_target"]) <= float(r["p_pred"]) + 1e-6 <= 1 + 1e-6
        assert float(r["loss"]) == pytest.approx(-math.log(float(r["p_target"])), rel=1e-4, abs=1e-5)
        assert int(r["correct"]) == (r["pred"] == r["target"])
    assert sum(int(r["correct"]) for r in rows) / len(rows) == pytest.approx(result.metrics["val_acc"], abs=1e-5)
    assert sum(float(r["loss"]) for r in rows) / len(rows) == pytest.approx(result.metrics["val_loss"], rel=1e-3, abs=2e-5)
