"""The shared trainer: what each strategy trains, resume, early stop, divergence, the run directory, bad input,
inference from a run, every plugin family, the seed recipe, the LR finder inside a run, and ``build_run``.

Everything runs on CPU with random-init backbones at 32 px on tiny generated PNG folders.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from helpers_cli import one_line
from helpers_images import assert_png, make_folder, write_image
from PIL import Image
from torch import nn

import zoo_core
from zoo_core import DataError, TrainingError, ZooError, strategies
from zoo_core import data as zdata
from zoo_core.outputs import plots
from zoo_core.rundir import load_checkpoint
from zoo_core.training import TrainConfig, build_run, report, steps
from zoo_core.training.checkpoint import checkpoint

FAST: dict[str, Any] = dict(weights=None, image_size=32, num_workers=0, progress=False, batch_size=8,
                            precision="fp32", device="cpu")
TIMING = {"images_per_s", "epoch_seconds"}  # the only metrics allowed to differ between identical runs
REAL_PLOTS = {"learning_curves": plots.learning_curves, "confusion_matrix": plots.confusion_matrix,
              "top_losses": plots.top_losses}


@pytest.fixture(autouse=True)
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Matplotlib costs ~1.5 s a run; tests that check the PNGs put the real functions back."""
    monkeypatch.setattr(plots, "learning_curves", lambda *a, **k: None)
    monkeypatch.setattr(plots, "confusion_matrix", lambda *a, **k: None)
    monkeypatch.setattr(plots, "top_losses", lambda *a, **k: None)


@pytest.fixture(scope="module")
def easy2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes × 12 images (20 train / 4 val)."""
    return make_folder(tmp_path_factory.mktemp("easy2"), num_classes=2, per_class=12)


@pytest.fixture(scope="module")
def easy3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes × 10 images (24 train / 6 val)."""
    return make_folder(tmp_path_factory.mktemp("easy3"), num_classes=3, per_class=10)


def train(tmp_path: Path, name: str, data: Path, **kw: Any) -> zoo_core.TrainResult:
    return zoo_core.train(kw.pop("backbone", "resnet18"), data, out_dir=str(tmp_path / "runs"), run_name=name,
                          **{**FAST, **kw})


def init_checkpoint(tmp_path: Path, backbone: str = "resnet18", num_classes: int = 2) -> tuple[str, dict]:
    """A random-init state saved to a local file, so a run's starting weights are known exactly."""
    torch.manual_seed(1234)
    state = {k: v.clone() for k, v in zoo_core.create(backbone, num_classes=num_classes, weights=None)
             .state_dict().items()}
    path = tmp_path / f"init-{backbone.replace('/', '_')}.pth"
    torch.save(state, path)
    return str(path), state


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    """Keys (parameters and buffers) whose tensors are not bit-identical."""
    assert before.keys() == after.keys()
    return {k for k in before if not torch.equal(before[k], after[k].to(before[k].dtype))}


def weights(run: Path, name: str = "best.pt") -> dict[str, torch.Tensor]:
    return load_checkpoint(run / name)["model"]


def rows(run: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the wall-clock columns."""
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), k


def interrupt_at(monkeypatch: pytest.MonkeyPatch, call: int,
                 before: Callable[[nn.Module], None] | None = None) -> Callable[[], None]:
    """Make the ``call``-th epoch raise KeyboardInterrupt (or, with ``before``, run ``before(module)`` and
    go on). Returns a function that puts the real ``train_one_epoch`` back."""
    real = steps.train_one_epoch
    calls = {"n": 0}

    def patched(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == call:
            if before is None:
                raise KeyboardInterrupt
            before(module)
        return real(module, *args, **kwargs)

    monkeypatch.setattr(steps, "train_one_epoch", patched)
    return lambda: monkeypatch.setattr(steps, "train_one_epoch", real)


# ---- 1. each strategy trains exactly what it should -------------------------------------------------------
HEAD = {"fc.weight", "fc.bias"}


@pytest.mark.parametrize("mode, kw", [
    ("converged head fit", {}),
    ("head on cached features", {"epochs": 2}),
    ("end to end", {"epochs": 2, "augment": "flip"}),
])
def test_feature_extraction_changes_only_the_head(tmp_path: Path, easy2: Path, mode: str, kw: dict) -> None:
    path, init = init_checkpoint(tmp_path)
    r = train(tmp_path, "fe", easy2, strategy="feature-extraction", weights=path, **kw)
    assert r.config["feature_cache"] is ("augment" not in kw)
    for name in ("best.pt", "last.pt") if kw else ("best.pt",):
        ck = load_checkpoint(r.run_dir / name)
        if ck.get("part"):  # head training on cached features: last.pt holds the head alone (cheap per epoch)
            assert (mode, name, ck["part"]) == ("head on cached features", "last.pt", "fc")
            assert set(ck["model"]) == {"weight", "bias"} and not torch.equal(ck["model"]["weight"], init["fc.weight"])
            continue
        # the head moved; every backbone parameter and BN buffer (running stats, batch counter) did not
        assert changed(init, ck["model"]) == HEAD, (mode, name)
    assert r.trainable_params == 512 * 2 + 2
    assert all(row["trainable_params"] == 512 * 2 + 2 for row in r.history)
    if kw:
        assert len(r.history) == 2 and all(row["lr"] > 0 for row in r.history)


BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.mark.parametrize("head_init", ["random", "probe"])
def test_finetune_trains_last_stage_and_head_through_an_optimizer_of_trainable_params(
        tmp_path: Path, easy2: Path, monkeypatch: pytest.MonkeyPatch, head_init: str) -> None:
    seen: dict[str, Any] = {}
    real_groups, real_make = strategies.param_groups, strategies.make_optimizer

    def spy_groups(model: nn.Module, *a: Any, **k: Any) -> list[dict]:
        seen["model"] = model
        return real_groups(model, *a, **k)

    def spy_make(*a: Any, **k: Any) -> torch.optim.Optimizer:
        seen["optimizer"] = real_make(*a, **k)
        return seen["optimizer"]

    monkeypatch.setattr(strategies, "param_groups", spy_groups)
    monkeypatch.setattr(strategies, "make_optimizer", spy_make)
    path, init = init_checkpoint(tmp_path)
    r = train(tmp_path, "ft", easy2, strategy="finetune", trainable_stages=1, weights=path, epochs=1, max_steps=2,
              head_init=head_init)
    top = {k for k in init if k.startswith(("layer4.", "fc."))}
    assert any(k.endswith("running_mean") for k in top)
    # stem and layer1-3 (params and BN buffers) bit-identical; from the probe (LP-FT) the trainable stage's
    # BatchNorm keeps the statistics the probe's head was fit with
    kept = {k for k in top if k.endswith(BN_STATS)} if head_init == "probe" else set()
    assert changed(init, weights(r.run_dir, "last.pt")) == top - kept

    model, opt = seen["model"], seen["optimizer"]
    in_opt = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(in_opt) == len(set(in_opt))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(in_opt) == trainable == {id(p) for n, p in model.named_parameters() if n.startswith(("layer4.", "fc."))}
    n_train = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("layer4.", "fc.")))
    assert r.trainable_params == r.history[0]["trainable_params"] == n_train < r.total_params
    assert {g["name"] for g in opt.param_groups} == {"layer4", "head"}


@pytest.mark.parametrize("head_init", ["random", "probe"])
def test_full_changes_every_parameter_and_buffer(tmp_path: Path, easy2: Path, head_init: str) -> None:
    path, init = init_checkpoint(tmp_path)
    r = train(tmp_path, "full", easy2, strategy="full", weights=path, epochs=1, max_steps=2, head_init=head_init)
    kept = {k for k in init if k.endswith(BN_STATS)} if head_init == "probe" else set()  # see the test above
    assert changed(init, weights(r.run_dir, "last.pt")) == set(init) - kept
    assert r.trainable_params == r.total_params


def test_gradual_trains_head_first_then_all_and_resumes_across_the_phase_change(
        tmp_path: Path, easy2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, init = init_checkpoint(tmp_path)
    kw = dict(strategy="gradual", head_epochs=1, epochs=2, max_steps=2, weights=path)
    a = train(tmp_path, "A", easy2, **kw)

    restore = interrupt_at(monkeypatch, 2)  # interrupted as epoch 2 (all layers) starts
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, "B", easy2, **kw)
    restore()
    b_dir = tmp_path / "runs" / "B"
    after_head_phase = load_checkpoint(b_dir / "last.pt")
    assert after_head_phase["epoch"] == 1
    assert changed(init, after_head_phase["model"]) == HEAD  # epoch 1: only the head (BN stats untouched)

    b = zoo_core.train(resume=b_dir)
    stats = {k for k in init if k.endswith(BN_STATS)}  # LP-FT keeps the BatchNorm statistics the probe saw
    assert changed(after_head_phase["model"], weights(b_dir, "last.pt")) == set(init) - stats  # epoch 2: the rest
    assert [r["trainable_params"] for r in b.history] == [1026, b.total_params]
    assert rows(b_dir) == rows(a.run_dir)
    assert_same_state(weights(b_dir, "last.pt"), weights(a.run_dir, "last.pt"))
    assert_same_state(weights(b_dir), weights(a.run_dir))


# ---- 3. the default strategy learns an easy task from frozen random features ---------------------------------
def test_feature_extraction_on_random_resnet18_separates_an_easy_task(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", num_classes=2, per_class=25, seed=7)
    r = train(tmp_path, "easy", root)
    assert r.strategy == "feature-extraction" and r.config["head_fit"]
    assert len(r.history) == 1 and r.metrics["val_acc"] >= 0.9, r.metrics


# ---- 4. resume equals an uninterrupted run; runs are deterministic ---------------------------------------------
def test_resume_end_to_end_equals_uninterrupted(tmp_path: Path, easy2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(strategy="finetune", augment=True, epochs=3, max_steps=2, early_stopping=None)
    a = train(tmp_path, "A", easy2, **kw)
    assert len(a.history) == 3

    restore = interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, "B", easy2, **kw)
    restore()
    b_dir = tmp_path / "runs" / "B"
    assert rows(b_dir) == rows(a.run_dir)[:2]  # a second run of the same config repeats the first exactly
    b = zoo_core.train(resume=b_dir)
    assert rows(b_dir) == rows(a.run_dir) and len(b.history) == 3
    assert b.metrics == a.metrics and b.best_epoch == a.best_epoch
    assert_same_state(weights(b_dir), weights(a.run_dir))
    last_a, last_b = load_checkpoint(a.run_dir / "last.pt"), load_checkpoint(b_dir / "last.pt")
    assert_same_state(last_b["model"], last_a["model"])
    assert last_a["step"] == last_b["step"] == 6
    exp_avg = [s["exp_avg"] for s in last_a["optimizer"]["state"].values()]
    assert all(torch.equal(x, y["exp_avg"]) for x, y in zip(exp_avg, last_b["optimizer"]["state"].values()))


def test_resume_head_training_on_cached_features_equals_uninterrupted(
        tmp_path: Path, easy2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(strategy="feature-extraction", epochs=3, batch_size=4, early_stopping=None)
    a = train(tmp_path, "A", easy2, **kw)
    restore = interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, "B", easy2, **kw)
    restore()
    b = zoo_core.train(resume=tmp_path / "runs" / "B")
    assert b.config["feature_cache"] and len(b.history) == 3
    assert rows(b.run_dir) == rows(a.run_dir)
    assert all("val_top5" not in r for r in rows(a.run_dir))  # 2 classes: no top-5 column
    assert_same_state(weights(b.run_dir), weights(a.run_dir))
    assert_same_state(weights(b.run_dir, "last.pt"), weights(a.run_dir, "last.pt"))


def test_same_seed_same_metrics_other_seed_differs(tmp_path: Path, easy2: Path) -> None:
    kw = dict(strategy="full", augment=True, epochs=2, max_steps=1)
    first, again = train(tmp_path, "s0", easy2, **kw), train(tmp_path, "s0b", easy2, **kw)
    other = train(tmp_path, "s1", easy2, seed=1, **kw)
    assert rows(first.run_dir) == rows(again.run_dir)
    assert_same_state(weights(first.run_dir), weights(again.run_dir))
    assert rows(first.run_dir) != rows(other.run_dir)


# ---- 5. early stopping and divergence --------------------------------------------------------------------------
def test_early_stopping_stops_and_a_resume_does_not_restart_it(tmp_path: Path, easy2: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # every step at LR 0 (--lr 0 itself is refused): the head never moves, so the validation loss never
    # improves after epoch 1
    set_lr = strategies.set_lr
    monkeypatch.setattr(strategies, "set_lr", lambda optimizer, factor: set_lr(optimizer, 0.0))
    r = train(tmp_path, "es", easy2, strategy="feature-extraction", epochs=8, early_stopping=2)
    assert len(r.history) == 3 and r.best_epoch == 1
    assert json.loads((r.run_dir / "summary.json").read_text())["epochs_run"] == 3
    again = zoo_core.train(resume=r.run_dir)
    assert len(again.history) == 3 and len(rows(r.run_dir)) == 3


def test_nan_loss_raises_training_error_and_keeps_the_best_checkpoint(
        tmp_path: Path, easy2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot: dict[str, Any] = {}
    run = tmp_path / "runs" / "nan"

    def poison(head: nn.Module) -> None:  # epoch 2 starts from a NaN head
        # on cached features best.pt is written when the loop stops: it must hold the epoch-1 head
        snapshot["head"] = head.weight.detach().clone()
        with torch.no_grad():
            head.weight.fill_(math.nan)

    interrupt_at(monkeypatch, 2, before=poison)
    with pytest.raises(TrainingError) as info:
        train(tmp_path, "nan", easy2, strategy="feature-extraction", epochs=3)
    msg = one_line(info.value)
    assert "loss is nan" in msg and "epoch 2" in msg and "best checkpoint (epoch 1)" in msg
    assert str(run / "best.pt") in msg and "--lr" in msg
    ck = torch.load(run / "best.pt", weights_only=True)
    assert torch.equal(ck["model"]["fc.weight"], snapshot["head"])
    assert ck["epoch"] == 1 and all(torch.isfinite(t.float()).all() for t in ck["model"].values())
    probs = zoo_core.load(run).predict([next((easy2 / "class0").iterdir())], topk=2)[0]
    assert all(math.isfinite(t["probability"]) for t in probs["top"])


def test_non_finite_validation_loss_stops_the_run(tmp_path: Path, easy2: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = steps.evaluate
    calls = {"n": 0}

    def evaluate(*args: Any, **kwargs: Any) -> dict:
        out = real(*args, **kwargs)
        calls["n"] += 1
        return {**out, "val_loss": math.inf} if calls["n"] == 2 else out

    monkeypatch.setattr(steps, "evaluate", evaluate)
    with pytest.raises(TrainingError) as info:
        train(tmp_path, "inf", easy2, strategy="feature-extraction", epochs=3)
    msg = one_line(info.value)
    assert "validation loss is inf after epoch 2" in msg and "best checkpoint (epoch 1)" in msg
    run = tmp_path / "runs" / "inf"
    assert load_checkpoint(run / "best.pt")["epoch"] == 1 == load_checkpoint(run / "last.pt")["epoch"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_non_finite_head_fit_is_a_training_error(tmp_path: Path, easy2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo_core import headfit

    real = headfit.fit_linear_head

    def nan_fit(*args: Any, **kwargs: Any) -> Any:
        fit = real(*args, **kwargs)
        fit.weight[0, 0] = math.nan
        return fit

    monkeypatch.setattr(headfit, "fit_linear_head", nan_fit)
    with pytest.raises(TrainingError) as info:
        train(tmp_path, "nanfit", easy2)
    assert "non-finite" in one_line(info.value) and "--precision fp32" in str(info.value)
    assert not (tmp_path / "runs" / "nanfit" / "best.pt").exists()


def test_exploding_learning_rate_is_a_training_error(tmp_path: Path, easy2: Path) -> None:
    with pytest.raises(TrainingError) as info:
        train(tmp_path, "boom", easy2, strategy="full", lr=1e6, epochs=3, max_steps=3)
    msg = one_line(info.value)
    assert "nan" in msg or "inf" in msg
    assert "Lower the learning rate (--lr)" in msg


# ---- 6. the run directory --------------------------------------------------------------------------------------
def test_run_directory_contents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, fn in REAL_PLOTS.items():
        monkeypatch.setattr(plots, name, fn)
    root = make_folder(tmp_path / "five", num_classes=5, per_class=5)
    r = train(tmp_path, "five", root, strategy="finetune", epochs=2, max_steps=1, batch_size=4)
    run = r.run_dir
    assert run == tmp_path / "runs" / "five"

    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == [f"class{i}" for i in range(5)] and config["num_classes"] == 5
    assert config["train"]["backbone"] == "resnet18" and config["train"]["strategy"] == "finetune"
    assert config["train"]["epochs"] == 2 and config["epochs"] == 2 and config["lr"] == 1e-3
    assert config["skipped_files"] == [] and config["data_config"]["input_size"] == [3, 32, 32]
    assert config["stages"] == ["stem", "layer1", "layer2", "layer3", "layer4"] and config["head"] == "fc"

    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in lines] == [1, 2]
    for row in lines:
        assert {"train_loss", "val_loss", "val_acc", "val_top5", "lr", "images_per_s", "epoch_seconds"} <= set(row)
        assert 0 <= row["val_acc"] <= row["val_top5"] <= 1 and row["lr"] > 0 and row["images_per_s"] > 0
    with open(run / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(lines[0]) and len(table) == 2
    assert [float(t["val_loss"]) for t in table] == [row["val_loss"] for row in lines]

    for name in ("best.pt", "last.pt"):
        ck = torch.load(run / name, map_location="cpu", weights_only=True)
        assert {"model", "classes", "backbone", "data_config", "strategy"} <= set(ck), name
        assert ck["classes"] == config["classes"] and ck["backbone"] == "resnet18" and ck["strategy"] == "finetune"
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and {"optimizer", "history", "best", "rng", "step"} <= set(last)

    for name in ("curves.png", "confusion.png", "top_losses.png"):
        assert_png(run / name, min_size=(100, 100))
    with open(run / "per_class.csv", newline="") as f:
        per_class = list(csv.DictReader(f))
    assert [p["class"] for p in per_class] == config["classes"]
    assert sum(int(p["support"]) for p in per_class) == 5
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == r.best_epoch and summary["metrics"]["val_acc"] == r.metrics["val_acc"]

    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "metrics.jsonl", "best.pt", "curves.png"):  # like any file open() creates
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temp files left behind


# ---- 7. bad input through the trainer ---------------------------------------------------------------------------
def test_bad_files_are_skipped_and_odd_pixel_formats_train(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", num_classes=2, per_class=8)
    for c in (0, 1):
        for i, mode in enumerate(("L", "RGBA", "P", "I;16")):
            write_image(root / f"class{c}" / f"{mode.replace(';', '')}.png", c, 50 + i, mode)
    (root / "class0" / "empty.png").write_bytes(b"")
    (root / "class0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    (root / "class1" / "notes.txt").write_text("not an image")
    assert Image.open(root / "class0" / "I16.png").mode.startswith("I;16")

    r = train(tmp_path, "bad", root, strategy="finetune", epochs=1)  # every image goes through a loader
    skipped = {Path(p).name: why for p, why in r.config["skipped_files"]}
    assert set(skipped) == {"empty.png", "broken.png", "notes.txt"}
    on_disk = json.loads((r.run_dir / "config.json").read_text())["skipped_files"]
    assert sorted(Path(p).name for p, _ in on_disk) == sorted(skipped)
    assert r.config["data_summary"] == "20 train / 4 val images, 2 classes (3 skipped)"
    assert math.isfinite(r.history[0]["train_loss"]) and math.isfinite(r.metrics["val_loss"])


def test_data_errors_from_the_trainer(tmp_path: Path) -> None:
    single = make_folder(tmp_path / "single", num_classes=1, per_class=4)
    with pytest.raises(DataError, match="at least 2 classes"):
        train(tmp_path, "x", single)
    missing = tmp_path / "does-not-exist"
    with pytest.raises(DataError) as info:
        train(tmp_path, "x", missing)
    assert str(missing) in one_line(info.value)
    split_root = tmp_path / "presplit"
    make_folder(split_root / "train", num_classes=2, per_class=3)
    make_folder(split_root / "val", num_classes=3, per_class=2, names=["class0", "class1", "zebra"])
    with pytest.raises(DataError) as info:
        train(tmp_path, "x", split_root)
    assert "zebra" in one_line(info.value)
    assert not (tmp_path / "runs").exists()  # bad data leaves no half-made run directory behind


# ---- 8. inference from a run ------------------------------------------------------------------------------------
def test_load_predicts_what_validation_measured(tmp_path: Path, easy3: Path) -> None:
    r = train(tmp_path, "inf", easy3, strategy="finetune", epochs=2, max_steps=2)
    clf = zoo_core.load(r.run_dir)
    assert clf.classes == ["class0", "class1", "class2"] and not clf.training
    val = zdata.load_data(easy3, val_fraction=0.2, seed=0, progress=False).val
    paths, labels = [p for p, _ in val.samples], torch.tensor([y for _, y in val.samples])
    with torch.no_grad():
        logits = clf(clf.preprocess(paths))
    loss = float(nn.functional.cross_entropy(logits, labels))
    assert loss == pytest.approx(r.metrics["val_loss"], abs=2e-6)
    assert float((logits.argmax(1) == labels).float().mean()) == pytest.approx(r.metrics["val_acc"], abs=1e-6)
    matrix = json.loads((r.run_dir / "summary.json").read_text())["confusion_matrix"]
    assert matrix == report.confusion(logits.argmax(1), labels, 3)

    preds = zoo_core.predict(r.run_dir, paths, topk=2)
    probs = logits.softmax(1)
    for out, path, p in zip(preds, paths, probs):
        assert out["image"] == path and len(out["top"]) == 2
        ps = [t["probability"] for t in out["top"]]
        assert ps == sorted(ps, reverse=True) and sum(ps) <= 1 + 1e-6 and all(0 <= q <= 1 for q in ps)
        assert out["top"][0]["label"] == clf.classes[int(p.argmax())]
        assert ps[0] == pytest.approx(float(p.max()), abs=1e-5)
    assert zoo_core.load(r.run_dir / "last.pt").classes == clf.classes


# ---- 9. every plugin family through the same trainer --------------------------------------------------------------
@pytest.mark.parametrize("backbone", ["resnet18", "vgg11", "timm/test_resnet", "timm/test_vit"])
def test_every_family_trains_an_epoch(tmp_path: Path, easy2: Path, backbone: str) -> None:
    r = train(tmp_path, "fam", easy2, backbone=backbone, strategy="finetune", epochs=1,
              max_steps=1 if backbone == "vgg11" else 2, batch_size=4)
    assert r.backbone == backbone and len(r.history) == 1
    assert math.isfinite(r.history[0]["train_loss"]) and math.isfinite(r.metrics["val_loss"])
    assert 0 < r.trainable_params < r.total_params
    ck = load_checkpoint(r.run_dir / "best.pt")
    assert ck["backbone"] == backbone and ck["data_config"]["input_size"] == [3, 32, 32]


# ---- 10. the seed recipe -----------------------------------------------------------------------------------------
def test_seed_recipe_in_a_few_lines(tmp_path: Path, easy2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = zoo_core.train("resnet18", easy2, weights=None, image_size=32)
    assert 0.0 <= result.metrics["val_acc"] <= 1.0
    assert result.run_dir.parent == Path("runs") and (tmp_path / result.run_dir / "best.pt").is_file()
    assert result.strategy == "feature-extraction" and result.trainable_params == 1026
    assert "val top-1" in result.summary()


# ---- 11. errors are one actionable line -----------------------------------------------------------------------------
def test_option_and_resume_errors_are_one_actionable_line(tmp_path: Path, easy2: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [
        (dict(strategy="unfreeze-some"), "feature-extraction"),
        (dict(strategy="finetune", optimizer="rmsprop"), "'adamw' or 'sgd'"),
        (dict(epochs=0), "--epochs"),
        (dict(precision="fp8"), "--precision"),
        (dict(lr="fast"), "--lr"),
    ]
    for kw, hint in cases:
        with pytest.raises(ZooError) as info:
            train(tmp_path, "opt", easy2, **kw)
        assert hint in one_line(info.value), kw
    assert not (tmp_path / "runs" / "opt").exists()  # rejected before any work
    with pytest.raises(ZooError) as info:
        zoo_core.train(resume=tmp_path)
    assert "config.json" in one_line(info.value)
    with pytest.raises(ZooError) as info:
        zoo_core.train("resnet18")
    assert "folder" in one_line(info.value)

    restore = interrupt_at(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, "early", easy2, strategy="finetune", epochs=2, max_steps=1)
    restore()
    with pytest.raises(ZooError) as info:
        zoo_core.train(resume=tmp_path / "runs" / "early")
    assert "last.pt" in one_line(info.value) and "without --resume" in str(info.value)


# ---- the LR range test inside a run -------------------------------------------------------------------------------
def test_lr_auto_runs_the_range_test_and_trains_with_its_suggestion(tmp_path: Path, easy2: Path) -> None:
    r = train(tmp_path, "auto", easy2, strategy="finetune", lr="auto", epochs=1, max_steps=1, batch_size=16)
    found = r.config["lr_find"]
    assert 1e-7 <= found["suggestion"] <= 1.0
    assert r.config["train"]["lr"] == found["suggestion"] == r.config["lr"]
    assert Path(found["plot"]) == r.run_dir / "lr_find.png"
    assert_png(r.run_dir / "lr_find.png")
    curve = json.loads((r.run_dir / "lr_find.json").read_text())
    assert len(curve["lrs"]) == len(curve["losses"]) >= 3 and curve["lrs"] == sorted(curve["lrs"])
    # the head fit has no learning rate: "auto" is dropped without a range test
    fe = train(tmp_path, "auto-fe", easy2, lr="auto")
    assert fe.config["lr_find"] is None and not (fe.run_dir / "lr_find.png").exists()


# ---- build_run and the checkpoint dicts ---------------------------------------------------------------------------
def test_build_run_resolves_without_writing_or_changing_the_config(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "data", num_classes=2, per_class=5, size=32)
    cfg = TrainConfig(backbone="resnet18", strategy="linear", weights=None, image_size=32, lr="0.01",
                      progress=False, num_workers=0, device="cpu", precision="fp32")
    state = build_run(cfg, data)
    assert cfg.strategy == "linear" and cfg.lr == "0.01"  # the caller's config is left alone
    assert state.cfg.strategy == "feature-extraction" and state.cfg.lr == 0.01
    assert state.shape.cached and state.head_fit and state.lr is None and state.epochs is None
    assert state.run is None and list(tmp_path.iterdir()) == [tmp_path / "data"]
    assert state.record["lr"] is None and state.record["stages"][-1] == "layer4" and state.record["head"] == "fc"
    e2e = build_run(TrainConfig(**{**vars(cfg), "strategy": "finetune", "epochs": 2}), data)
    assert not e2e.shape.cached and e2e.augment and e2e.lr == 0.01 and e2e.epochs == 2
    ck = checkpoint(e2e, {"w": torch.zeros(1)}, epoch=1)
    assert set(ck) == {"model", "classes", "backbone", "strategy", "data_config", "num_classes", "config", "epoch"}
    assert ck["strategy"] == "finetune" and ck["config"]["lr"] == 0.01 and ck["data_config"]["input_size"] == [3, 32, 32]
