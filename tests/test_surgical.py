"""``--strategy auto``: LP-FT trials on a subsample choose which stages fine-tune (zoo_core.training.surgical);
the trials are recorded and drawn, the chosen stages are the ones that train, Auto-RGN scales each tensor's
LR by its relative gradient norm, and a resumed auto run equals an uninterrupted one.
Random-init ResNet-18 at 32 px, one step per epoch (mechanics only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers_images import make_folder
from test_trainer import FAST, assert_same_state, changed, interrupt_at, rows, train, weights  # noqa: F401

import zoo_core
from zoo_core.outputs import plots
from zoo_core.training import surgical

AUTO = dict(strategy="auto", epochs=2, max_steps=1, augment=False, early_stopping=None)


@pytest.fixture(scope="module")
def easy2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("easy2"), num_classes=2, per_class=12)


def record(run: Path) -> dict[str, Any]:
    return json.loads((run / "config.json").read_text())


def test_the_candidates_cover_last_half_all_first_and_auto_rgn() -> None:
    by = {c.name: c for c in surgical.choices(8)}
    assert by["last"].stages == (7,) and by["last-half"].stages == (4, 5, 6, 7) and by["first"].stages == (0,)
    assert by["all"].stages == by["auto-rgn"].stages == tuple(range(8)) and by["auto-rgn"].rgn
    assert [c.name for c in surgical.choices(1)] == ["last", "auto-rgn"]  # one stage: the same set once (+ RGN)


def test_auto_records_and_draws_its_trials_and_trains_only_the_chosen_stages(
        tmp_path: Path, easy2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "trial_bars", plots.trial_bars)  # the real plot (no_plots leaves it alone)
    forced = {"name": "first", "stages": [0], "rgn": False}
    real = surgical.run_trials

    def first_wins(state: Any) -> dict[str, Any]:  # the real trials, then the first stage as the choice
        out = real(state)
        return {**out, "chosen": forced}

    monkeypatch.setattr(surgical, "run_trials", first_wins)
    init = zoo_core.create("resnet18", num_classes=2, weights=None)
    torch.save(init.state_dict(), tmp_path / "init.pth")
    r = train(tmp_path, "auto", easy2, weights=str(tmp_path / "init.pth"), bn_stats="frozen", **AUTO)
    rec = record(r.run_dir)["surgical"]
    assert [t["name"] for t in rec["trials"]] == ["probe", "last", "last-half", "all", "first", "auto-rgn"]
    for t in rec["trials"]:
        assert t["ci"][0] <= t["val_acc"] <= t["ci"][1] and t["val_loss"] >= 0
    assert rec["chosen"] == forced and (r.run_dir / "surgical.png").read_bytes()[:4] == b"\x89PNG"
    moved = changed({k: v for k, v in init.state_dict().items()}, weights(r.run_dir, "last.pt"))
    assert any(k.startswith("conv1") or k.startswith("bn1") for k in moved)  # the first stage trained
    assert not any(k.startswith("layer4") for k in moved)  # the last stage did not
    assert any(k.startswith("fc") for k in moved)


def test_auto_rgn_scales_each_tensors_lr_by_its_relative_gradient_norm() -> None:
    a, b = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0, "rgn": True}, {"params": [b], "lr": 1.0, "rgn": True}])
    opt.register_step_pre_hook(surgical._rgn_scale)
    a.grad, b.grad = torch.full((4,), 0.5), torch.full((4,), 0.1)  # relative norms 0.5 and 0.1
    opt.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1.0, 0.2])
    assert torch.allclose(a.detach(), torch.full((4,), 0.5)) and torch.allclose(b.detach(), torch.full((4,), 0.98))


def test_a_resumed_auto_run_equals_the_uninterrupted_one_without_rerunning_the_trials(
        tmp_path: Path, easy2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = train(tmp_path, "A", easy2, **AUTO)
    trial_epochs = (len(record(a.run_dir)["surgical"]["trials"]) - 1) * surgical.TRIAL_EPOCHS
    restore = interrupt_at(monkeypatch, trial_epochs + 2)  # the run's epoch 2, after the trials' epochs
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, "B", easy2, **AUTO)
    restore()

    def again(*a: Any, **k: Any) -> None:
        raise AssertionError("a resumed run ran its trials again")

    monkeypatch.setattr(surgical, "run_trials", again)
    b = zoo_core.train(resume=tmp_path / "runs" / "B")
    assert record(b.run_dir)["surgical"]["chosen"] == record(a.run_dir)["surgical"]["chosen"]
    assert rows(b.run_dir) == rows(a.run_dir)
    assert_same_state(weights(b.run_dir, "last.pt"), weights(a.run_dir, "last.pt"))
