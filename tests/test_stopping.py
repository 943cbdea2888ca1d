"""Early stopping that lets a fine-tune improve: patience counts from the run's own best epoch (not from the
linear probe it starts from), and without --epochs the budget grows while the validation loss falls; a resumed
run follows the grown budget. Random-init ResNet-18 at 32 px, one step per epoch."""

from __future__ import annotations

import io
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import pytest
from helpers_images import make_folder
from test_trainer import assert_same_state, interrupt_at, no_plots, rows, train, weights  # noqa: F401

import zoo_core
from zoo_core.training import config, steps, stopping


@pytest.fixture(scope="module")
def easy2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("easy2"), num_classes=2, per_class=12)


def falling_for(monkeypatch: pytest.MonkeyPatch, n: int, done: int = 0) -> None:
    """Validation loss 10 - epoch for the first ``n`` trained epochs (always above the probe's), then 20;
    ``done``: epochs the run finished before (a resume). The probe's own evaluations stay real."""
    real_eval, real_train = steps.evaluate, steps.train_one_epoch
    trained = {"n": done}

    def counted(*args: Any, **kwargs: Any) -> Any:
        trained["n"] += 1
        return real_train(*args, **kwargs)

    def scripted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        out, e = real_eval(*args, **kwargs), trained["n"]
        return out if e == 0 else {**out, "val_loss": 10.0 - e if e <= n else 20.0}

    monkeypatch.setattr(steps, "train_one_epoch", counted)
    monkeypatch.setattr(steps, "evaluate", scripted)


KW = dict(strategy="finetune", max_steps=1, augment=False)  # no --epochs: the 5-epoch budget, patience 3


def test_a_run_whose_val_loss_falls_for_6_epochs_is_not_stopped_at_epoch_3(
        tmp_path: Path, easy2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    falling_for(monkeypatch, 6)
    err = io.StringIO()
    with redirect_stderr(err):
        r = train(tmp_path, "fall6", easy2, progress=True, **KW)
    losses = [row["val_loss"] for row in r.history]
    # still best at epoch 5 → budget 5 + 3 = 8; epoch 6 is the last improvement; 7 and 8 are stale (2 < 3)
    assert losses[:6] == [9.0, 8.0, 7.0, 6.0, 5.0, 4.0] and len(r.history) == 8
    assert r.best_epoch == 0  # every trained epoch stayed above the probe: best.pt is still the probe
    log = err.getvalue()
    assert "budget extended to 8 epochs" in log and "finished the 8-epoch budget; keeping the linear probe" in log


def test_patience_counts_from_the_fine_tunes_own_best(tmp_path: Path, easy2: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    falling_for(monkeypatch, 2)  # epochs 1-2 improve, then 3 stale epochs: stop after epoch 5, not epoch 3
    err = io.StringIO()
    with redirect_stderr(err):
        r = train(tmp_path, "fall2", easy2, progress=True, **KW)
    assert len(r.history) == 5 and r.best_epoch == 0
    assert "early stop after epoch 5: no val-loss improvement for 3 epochs since epoch 2" in err.getvalue()


def test_the_budget_grows_by_the_patience_only_while_improving_and_up_to_the_cap() -> None:
    cfg = zoo_core.TrainConfig()
    falling = [{"val_loss": 10.0 - i} for i in range(5)]
    assert stopping.extended_end(cfg, falling, 5) == 8
    assert stopping.extended_end(cfg, falling[:4], 5) == 5  # the budget is not spent yet
    assert stopping.extended_end(cfg, [*falling[:4], {"val_loss": 7.5}], 5) == 5  # epoch 5 did not improve
    long = [{"val_loss": 100.0 - i} for i in range(14)]
    assert stopping.extended_end(cfg, long, 14) == stopping.BUDGET_CAP * config.DEFAULT_EPOCHS == 15
    assert stopping.extended_end(zoo_core.TrainConfig(epochs=5), falling, 5) == 5  # --epochs is the user's length
    assert stopping.extended_end(zoo_core.TrainConfig(early_stopping=0), falling, 5) == 5
    assert stopping.stale_epochs([{"val_loss": 3.0}, {"val_loss": 2.0}, {"val_loss": 2.5}]) == 1


def test_a_resume_after_the_budget_grew_equals_the_uninterrupted_run(
        tmp_path: Path, easy2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    falling_for(monkeypatch, 6)
    a = train(tmp_path, "A", easy2, **KW)
    falling_for(monkeypatch, 6)
    interrupt_at(monkeypatch, 7)  # epoch 7 of the grown budget
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, "B", easy2, **KW)
    monkeypatch.undo()
    falling_for(monkeypatch, 6, done=6)  # the resumed run scores epochs 7 and 8 as the uninterrupted one did
    b = zoo_core.train(resume=tmp_path / "runs" / "B")
    assert len(b.history) == 8 and rows(b.run_dir) == rows(a.run_dir)
    assert_same_state(weights(b.run_dir, "last.pt"), weights(a.run_dir, "last.pt"))
