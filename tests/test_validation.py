"""Option checks and resume: every bad option value is one line naming the
option (``zoo`` exit status 2, the same :class:`ZooError` from Python), refused before any work; what a
resume may change and what it refuses; stale temporary files of killed writes are removed from a run dir.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers_cli import one_line, one_line_error, run
from helpers_images import make_folder

import zoo_core
from zoo_core import ZooError, runtime
from zoo_core import data as zdata
from zoo_core.rundir import load_checkpoint
from zoo_core.training import TrainConfig, loop
from zoo_core.training.config import RESUMABLE, flag, validate
from zoo_core.util import atomic_write_bytes, is_temp_file, remove_stale_temps

FAST: dict[str, Any] = dict(weights=None, image_size=32, num_workers=0, progress=False, batch_size=8,
                            precision="fp32", device="cpu")

pytestmark = pytest.mark.usefixtures("skip_run_plots")


@pytest.fixture(scope="module")
def data2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("valid-data"), num_classes=2, per_class=6)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has neither CUDA nor MPS (whatever it really has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)


# ---- every bad input is one line naming the option and the value, before any work ----------------------
# (CLI arguments, what the line says). A case whose option needs the model (the stage count) loads the data.
BAD = [
    (["--image-size", "-5"], "--image-size must be a positive integer, got -5"),
    (["--image-size", "0"], "--image-size must be a positive integer, got 0"),
    (["--label-smoothing", "2"], "--label-smoothing must be a number in [0, 1), got 2.0"),
    (["--num-workers", "-1"], "--num-workers must be an integer >= 0, got -1"),
    (["--device", "cuda"], "--device 'cuda': no CUDA GPU is available here"),
    (["--device", "cuda:1"], "--device 'cuda:1': no CUDA GPU is available here"),
    (["--device", "mps"], "--device 'mps': Apple's MPS backend is not available here"),
    (["--device", "tpu"], "--device 'tpu' is not a device zoo can use; use auto, cpu, cuda, cuda:N or mps"),
    (["--device", "gpu please"], "--device 'gpu please' is not a device"),
    (["--lr", "-1"], "--lr must be a number > 0 or 'auto', got -1.0"),
    (["--lr", "0"], "--lr must be a number > 0 or 'auto', got 0.0"),
    (["--lr", "nan"], "--lr must be a number > 0 or 'auto', got nan"),
    (["--weight-decay", "-0.1"], "--weight-decay must be a number >= 0, got -0.1"),
    (["--warmup-epochs", "-1"], "--warmup-epochs must be a number >= 0, got -1.0"),
    (["--layer-decay", "-0.5"], "--layer-decay must be a number in (0, 1], got -0.5"),
    (["--layer-decay", "0"], "--layer-decay must be a number in (0, 1], got 0.0"),
    (["--early-stopping", "-1"], "--early-stopping must be an integer >= 0 or 'auto', got -1"),
    (["--augment", "rotate"], "--augment must be auto, on, off, or a comma list of crop, mild-crop, flip (or none), got 'rotate'"),
    (["--head-init", "zeros"], "--head-init must be 'probe' or 'random', got 'zeros'"),
    (["--backbone-lr-mult", "-1"], "--backbone-lr-mult must be a number >= 0, got -1.0"),
    (["--momentum", "1"], "--momentum must be a number in [0, 1), got 1.0"),
    (["--val-fraction", "1"], "--val-fraction must be a number in (0, 1), got 1.0"),
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--max-steps", "-3"], "--max-steps must be a positive integer, got -3"),
    (["--strategy", "finetune", "--trainable-stages", "-1"], "--trainable-stages must be an integer >= 0, got -1"),
    (["--strategy", "finetune", "--trainable-stages", "99"],
     "--trainable-stages 99 is more than resnet18 has: 5 stage(s) (stem, layer1, layer2, layer3, layer4); use 0 to 5"),
    (["--strategy", "gradual", "--head-epochs", "3", "--epochs", "3"],
     "--head-epochs 3 leaves no epoch to unfreeze the backbone with --strategy gradual and --epochs 3"),
    (["--strategy", "gradual", "--head-epochs", "5"],  # the default 5 epochs
     "--head-epochs 5 leaves no epoch to unfreeze the backbone with --strategy gradual and --epochs 5"),
]
NEEDS_MODEL = {"--trainable-stages 99"}


def _kwargs(argv: list[str]) -> dict[str, Any]:
    """The library keywords of CLI arguments, typed as the CLI types them."""
    types = {f.name: str(f.type) for f in TrainConfig.__dataclass_fields__.values()}
    out: dict[str, Any] = {}
    for option, value in zip(argv[::2], argv[1::2]):
        name = option[2:].replace("-", "_")
        kind = types[name]
        out[name] = int(value) if kind.startswith("int") else float(value) if kind.startswith("float") else value
    if out.get("lr") is not None:
        out["lr"] = float(out["lr"])
    return out


def _guard_data(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    """Loading the data is a test failure unless the case needs the model."""
    if not any(" ".join(argv[i:i + 2]) in NEEDS_MODEL for i in range(len(argv))):
        def refuse(*a: Any, **k: Any) -> None:
            raise AssertionError("the data was loaded before the bad option was refused")
        monkeypatch.setattr(zdata, "load_data", refuse)


@pytest.mark.usefixtures("no_gpu")
@pytest.mark.parametrize("argv, says", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_option_is_one_line_from_the_cli(tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch, argv: list[str], says: str) -> None:
    _guard_data(monkeypatch, argv)
    code, out, err = run(capsys, "train", "resnet18", "--data", data2, "--weights", "none", "--out-dir",
                         tmp_path / "runs", *argv)
    assert code == 2 and out == ""
    assert says in one_line_error(err)
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.usefixtures("no_gpu")
@pytest.mark.parametrize("argv, says", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_option_is_the_same_zoo_error_from_python(tmp_path: Path, data2: Path, monkeypatch: pytest.MonkeyPatch,
                                                      argv: list[str], says: str) -> None:
    _guard_data(monkeypatch, argv)
    kw = {**FAST, **_kwargs(argv)}
    with pytest.raises(ZooError) as info:
        zoo_core.train("resnet18", data2, out_dir=str(tmp_path / "runs"), **kw)
    assert says in one_line(info.value)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("kw, says", [
    (dict(epochs="3"), "--epochs must be a positive integer, got '3'"),
    (dict(batch_size=True), "--batch-size must be a positive integer, got True"),
    (dict(lr="fast"), "--lr must be a number > 0 or 'auto', got 'fast'"),
    (dict(label_smoothing=float("inf")), "--label-smoothing must be a number in [0, 1), got inf"),
    (dict(augment="sometimes"), "--augment must be auto, on, off, or a comma list of crop, mild-crop, flip (or none)"),
    (dict(augment=["flip", "blur"]), "--augment must be auto, on, off, or a comma list"),
    (dict(head_init=None), "--head-init must be 'probe' or 'random', got None"),
    (dict(run_name="a/b"), "--run-name must be a folder name without path separators (not '.' or '..'), got 'a/b'"),
    (dict(lrr=0.1), "unknown training option(s) lrr; did you mean lr"),
])
def test_python_values_of_the_wrong_kind_and_unknown_names(tmp_path: Path, data2: Path, kw: dict,
                                                           says: str) -> None:
    with pytest.raises(ZooError) as info:
        zoo_core.train("resnet18", data2, out_dir=str(tmp_path / "runs"), **{**FAST, **kw})
    assert says in one_line(info.value)
    assert not (tmp_path / "runs").exists()


def test_every_option_is_declared_with_a_help_and_a_rule_its_default_passes() -> None:
    import dataclasses

    from zoo_core.training.config import OPTIONS
    from zoo_core.training.options import Option

    fields = dataclasses.fields(TrainConfig)
    assert list(OPTIONS) == [f.name for f in fields]
    for f in fields:
        o = f.metadata.get("option")
        assert isinstance(o, Option), f"TrainConfig.{f.name} is not declared with option(...)"
        assert o.help.strip() and o.allowed.strip(), f"TrainConfig.{f.name} lacks a help text or what it allows"
        assert o.check(f.default), f"TrainConfig.{f.name}'s default fails its own rule"
        assert not o.check(object()), f"TrainConfig.{f.name}'s rule accepts anything"
    assert set(RESUMABLE) < set(OPTIONS)


@pytest.mark.parametrize("command, takes", [
    ("train", lambda name, o: o.cli),
    ("compare", lambda name, o: o.cli and name not in ("strategy", "out_dir", "run_name")),
    ("rank", lambda name, o: o.rank),
    ("lr-find", lambda name, o: o.cli and o.lr_find),
])
def test_each_command_offers_the_training_options_its_policy_says_with_their_help(command: str, takes: Any) -> None:
    from zoo_core.cli import build_parser
    from zoo_core.ranking import RANK_OPTIONS
    from zoo_core.training.config import OPTIONS

    assert set(RANK_OPTIONS) == {name for name, o in OPTIONS.items() if o.rank}
    sub = next(a for a in build_parser()._actions if a.choices)
    helps: dict[str, Any] = {}
    for a in sub.choices[command]._actions:
        if a.option_strings:
            helps.setdefault(a.dest, a.help)  # --augment's, not --no-augment's
    for name, o in OPTIONS.items():
        if name not in ("backbone", "data"):  # every command has these as arguments of its own
            assert (name in helps) == takes(name, o), f"zoo {command} and {flag(name)}"
            assert name not in helps or helps[name] == o.help


def test_validate_gives_plain_numbers_and_accepts_the_edges() -> None:
    import numpy as np

    cfg = validate(TrainConfig(lr="3e-4", epochs=np.int64(2), weight_decay=np.float32(0.5), warmup_epochs=0,
                               label_smoothing=0.0, early_stopping=0, trainable_stages=0, layer_decay=1.0,
                               backbone_lr_mult=0.0, seed=-1))
    assert cfg.lr == 3e-4 and type(cfg.epochs) is int and type(cfg.weight_decay) is float
    assert validate(TrainConfig(lr="auto")).lr == "auto"


def test_compare_and_lr_find_refuse_before_any_work(tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError("the data was loaded before the bad option was refused")

    monkeypatch.setattr(zdata, "load_data", refuse)
    with pytest.raises(ZooError) as info:
        zoo_core.compare(["resnet18", "vgg11"], data2, out_dir=tmp_path / "cmp", lr=-1.0)
    assert "--lr must be a number > 0 or 'auto', got -1.0" in one_line(info.value)
    with pytest.raises(ZooError) as info:  # checked per strategy: gradual's head epochs against the epochs
        zoo_core.compare(["resnet18"], data2, out_dir=tmp_path / "cmp", strategies=["full", "gradual"], epochs=1)
    assert "--head-epochs 1 leaves no epoch" in one_line(info.value)
    with pytest.raises(ZooError) as info:
        zoo_core.compare(["resnet18"], data2, out_dir=tmp_path / "cmp", device="tpu")
    assert "--device 'tpu'" in one_line(info.value)
    assert not (tmp_path / "cmp").exists()
    code, _, err = run(capsys, "compare", "resnet18", "--data", data2, "--out", tmp_path / "cmp",
                       "--num-workers", "-2")
    assert code == 2 and "--num-workers must be an integer >= 0, got -2" in one_line_error(err)
    with pytest.raises(ZooError) as info:
        zoo_core.lr_find("resnet18", data2, image_size=-1, out=tmp_path / "lr")
    assert "--image-size must be a positive integer, got -1" in one_line(info.value)
    with pytest.raises(ZooError) as info:
        zoo_core.lr_find("resnet18", data2, batchsize=4)
    assert "did you mean batch_size" in one_line(info.value)
    code, _, err = run(capsys, "lr-find", "resnet18", "--data", data2, "--label-smoothing", "3")
    assert code == 2  # lr-find has no --label-smoothing: a usage error, one line too
    assert "unrecognized arguments: --label-smoothing 3" in one_line_error(err)
    assert not (tmp_path / "cmp").exists() and not (tmp_path / "lr").exists()


def test_usage_errors_are_one_line_without_the_usage_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "train", "resnet18", "--data", "x", "--epochs", "abc")
    assert code == 2 and out == ""
    assert "argument --epochs: invalid int value: 'abc' (see `zoo train --help`)" in one_line_error(err)
    code, _, err = run(capsys, "train", "resnet18", "--data", "x", "--image-size", "3.5")
    assert code == 2 and "argument --image-size: invalid int value: '3.5'" in one_line_error(err)
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and "--trainable-stages" in out  # help is still the full text


def test_nproc_checks_the_options_once_before_launching(tmp_path: Path, data2: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo_core import distributed

    launched: list[Any] = []
    monkeypatch.setattr(distributed, "launch_torchrun", lambda *a, **k: launched.append(a) or 0)
    code, _, err = run(capsys, "train", "resnet18", "--data", data2, "--nproc", "2", "--warmup-epochs", "-2")
    assert code == 2 and "--warmup-epochs must be a number >= 0, got -2.0" in one_line_error(err)
    code, _, err = run(capsys, "train", "--resume", tmp_path, "--nproc", "2")
    assert code == 2 and "has no config.json" in one_line_error(err)
    assert launched == []
    code, _, _ = run(capsys, "train", "resnet18", "--data", data2, "--nproc", "2", "--epochs", "1")
    assert code == 0 and len(launched) == 1


def test_pick_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    assert runtime.pick_device("auto") == torch.device("cpu")
    assert runtime.pick_device(" CPU ") == torch.device("cpu")
    for bad in ("tpu", "", "xla", "cuda:x", "meta"):
        with pytest.raises(ZooError, match="not a device zoo can use"):
            runtime.pick_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert runtime.pick_device("auto") == torch.device("cuda")
    assert runtime.pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ZooError) as info:
        runtime.pick_device("cuda:2")
    assert "this machine has 2 CUDA GPU(s), cuda:0 to cuda:1" in one_line(info.value)


# ---- what a resume may change ------------------------------------------------------------------------------------
def _train(tmp_path: Path, name: str, data: Path, **kw: Any) -> zoo_core.TrainResult:
    return zoo_core.train("resnet18", data, out_dir=str(tmp_path / "runs"), run_name=name, **{**FAST, **kw})


HEAD_EPOCHS = dict(strategy="feature-extraction", epochs=2, early_stopping=None)  # the head on cached features


def test_resume_refuses_other_changes_and_names_what_can_change(tmp_path: Path, data2: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    r = _train(tmp_path, "done", data2, **HEAD_EPOCHS)
    files = {p.name: p.read_bytes() for p in r.run_dir.iterdir() if p.is_file()}
    for kw, says in [(dict(batch_size=4), "--batch-size (8 → 4)"), (dict(strategy="full"), "--strategy"),
                     (dict(weight_decay=0.0, seed=3), "--weight-decay (0.05 → 0.0), --seed (0 → 3)"),
                     (dict(epochs=1), "--epochs 1 is fewer than the 2 epochs"), (dict(lr="auto"), "--lr auto")]:
        with pytest.raises(ZooError) as info:
            zoo_core.train(resume=r.run_dir, **kw)
        assert says in one_line(info.value), kw
    with pytest.raises(ZooError) as info:
        zoo_core.train("vgg11", resume=r.run_dir)
    assert "cannot change BACKBONE ('resnet18' → 'vgg11')" in one_line(info.value)
    code, _, err = run(capsys, "train", "--resume", r.run_dir, "--max-steps", "1", "--augment")
    line = one_line_error(err)
    assert code == 2 and "cannot change --augment (None → True), --max-steps (None → 1)" in line
    assert "a resume may change only " + ", ".join(map(flag, RESUMABLE)) + "." in line
    assert "--epochs, --lr, " in line and "--early-stopping" in line
    assert {p.name: p.read_bytes() for p in r.run_dir.iterdir() if p.is_file()} == files  # nothing touched
    again = zoo_core.train(resume=r.run_dir, batch_size=8, strategy="linear", progress=False)  # same values: fine
    assert len(again.history) == 2


def test_resume_extends_epochs_and_records_every_change(tmp_path: Path, data2: Path, tmp_path_factory: Any) -> None:
    r = _train(tmp_path, "more", data2, **HEAD_EPOCHS)
    moved = tmp_path / "moved-data"
    os.rename(data2, moved)  # the data's location may change: its content is checked
    try:
        longer = zoo_core.train(data=moved, resume=r.run_dir, epochs=3, num_workers=0)
    finally:
        os.rename(moved, data2)
    assert [row["epoch"] for row in longer.history] == [1, 2, 3]
    record = json.loads((r.run_dir / "config.json").read_text())
    assert record["train"]["epochs"] == 3 and record["epochs"] == 3 and record["train"]["data"] == str(moved)
    assert record["resumes"] == [{"epoch": 2, "changed": {"data": [str(data2), str(moved)], "epochs": [2, 3]}}]
    zoo_core.train(data=data2, resume=r.run_dir, early_stopping=4)  # a second resume appends (nothing left to train)
    record = json.loads((r.run_dir / "config.json").read_text())
    assert [e["epoch"] for e in record["resumes"]] == [2, 3]
    assert record["resumes"][1]["changed"] == {"data": [str(moved), str(data2)], "early_stopping": [None, 4]}
    other = make_folder(tmp_path_factory.mktemp("other"), num_classes=3, per_class=4)
    with pytest.raises(ZooError) as info:
        zoo_core.train(data=other, resume=r.run_dir)
    assert "its classes (class0, class1, class2) are not the run's (class0, class1)" in one_line(info.value)
    changed = make_folder(tmp_path_factory.mktemp("changed"), num_classes=2, per_class=7)
    with pytest.raises(ZooError) as info:
        zoo_core.train(data=changed, resume=r.run_dir)
    assert "the data changed since the run started" in one_line(info.value)


def test_resume_with_a_new_lr_applies_it_to_the_restored_groups_and_the_schedule(
        tmp_path: Path, data2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo_core.training import steps

    kw = dict(strategy="finetune", trainable_stages=1, augment=False, epochs=2, max_steps=2, early_stopping=None)
    real, calls = steps.train_one_epoch, {"n": 0}

    def stop_in_epoch_2(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(steps, "train_one_epoch", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "lr", data2, **kw)
    monkeypatch.setattr(steps, "train_one_epoch", real)
    run_dir = tmp_path / "runs" / "lr"
    before = load_checkpoint(run_dir / "last.pt")
    assert {g["name"]: g["initial_lr"] for g in before["optimizer"]["param_groups"]}["head"] == 1e-3

    r = zoo_core.train(resume=run_dir, lr=0.02)
    last = load_checkpoint(run_dir / "last.pt")
    groups = {g["name"]: g for g in last["optimizer"]["param_groups"]}
    assert groups["head"]["initial_lr"] == 0.02
    assert groups["layer4"]["initial_lr"] == pytest.approx(0.02 * 0.1)  # backbone_lr_mult × layer_decay**0
    lr_at = loop.lr_schedule(TrainConfig(**r.config["train"]), steps_per_epoch=2, epochs=2)
    assert r.history[0]["lr"] == pytest.approx(1e-3 * lr_at(1), rel=1e-5)  # epoch 1 ran at the old LR …
    assert r.history[1]["lr"] == pytest.approx(0.02 * lr_at(3), rel=1e-5)  # … epoch 2 at the new one
    assert all(s["step"] == 4 for s in last["optimizer"]["state"].values())  # the moments went on, not restarted
    record = r.config
    assert record["train"]["lr"] == 0.02 and record["lr"] == 0.02
    assert record["resumes"] == [{"epoch": 1, "changed": {"lr": [None, 0.02]}}]


# ---- temporary files of a killed write ------------------------------------------------------------------------
def test_temp_file_names_and_cleanup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write_bytes(tmp_path / "last.pt", b"x")
    assert len(seen) == 1 and seen[0].startswith(".last.pt.") and is_temp_file(seen[0])  # one pattern for both
    for name in (".last.pt.k2j_x9ab.tmp", ".config.json.abc.tmp"):
        (tmp_path / name).write_bytes(b"partial")
    keep = ["notes.tmp", ".tmp", "last.pt", ".last.pt", ".hidden.tmp", "a.b.c.tmp"]
    for name in keep[:-1]:
        (tmp_path / name).write_bytes(b"mine")
    (tmp_path / keep[-1]).mkdir()
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == [".config.json.abc.tmp", ".last.pt.k2j_x9ab.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert remove_stale_temps(tmp_path / "missing") == []


def test_resume_and_a_restart_remove_stale_temp_checkpoints(tmp_path: Path, data2: Path) -> None:
    r = _train(tmp_path, "tmp", data2, **HEAD_EPOCHS)
    stale = r.run_dir / ".last.pt.q1w2e3r4.tmp"
    stale.write_bytes(b"\0" * 4096)  # what a kill during torch.save leaves
    zoo_core.train(resume=r.run_dir, epochs=3)
    assert not stale.exists() and (r.run_dir / "last.pt").is_file()
    assert not [p for p in r.run_dir.iterdir() if is_temp_file(p.name)]
    stale.write_bytes(b"\0")
    _train(tmp_path, "tmp", data2, **HEAD_EPOCHS)  # a new run under the same name
    assert not stale.exists()
