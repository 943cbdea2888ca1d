"""``executor="ray"`` (``zoo compare/rank --executor ray``) on a local Ray instance of 2 CPUs: the same
leaderboard and ranking as a serial run, reuse in both directions, a worker that dies is a failed entry (or
retried), workers that lack a plugin are named before any work, concurrent writers of one cache key
leave one valid entry."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
from helpers_cli import one_line_error, run
from helpers_images import make_folder

import zoo_core
from zoo_core import cache
from zoo_core.cache import store
from zoo_core.comparison.fanout import CompareJob
from zoo_core.errors import ZooError
from zoo_core.ranking import features as rank_features
from zoo_core.scaleout import RayExecutor

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test jobs below run on the workers
FAST = {"weights": None, "image_size": 32, "progress": False}
TINY = "timm/test_resnet"  # 0.4 M parameters
FE, FT, FULL = "feature-extraction", "finetune", "full"
STRATEGIES = [FE, FT, FULL]


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray-home")


@pytest.fixture(autouse=True)
def zoo_home(zoo_home: Any, shared_home: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """One cache and weights home for the whole module, so the Ray workers (started per environment) are
    reused from test to test."""
    for var, sub in (("TORCH_HOME", "torch"), ("HF_HOME", "hf"), ("HF_HUB_CACHE", "hf/hub"),
                     ("BACKBONE_ZOO_CACHE", "zoo-cache")):
        monkeypatch.setenv(var, str(shared_home / sub))
    return zoo_home


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("ray-data"), num_classes=3, per_class=12)


def results(entries: list[Any]) -> list[tuple[Any, ...]]:
    return sorted((e.backbone, e.strategy, e.val_acc, e.val_loss, e.val_top5, e.trainable_params, len(e.history))
                  for e in entries)


def test_compare_through_ray_equals_serial_and_reuse_goes_both_ways(local_ray: Any, data: Path,
                                                                     tmp_path: Path) -> None:
    kw = {"strategies": STRATEGIES, "epochs": 1, **FAST}
    serial = zoo_core.compare(TINY, data, out_dir=tmp_path / "serial", **kw)
    assert len(serial.entries) == 3 and all(e.status == "ok" for e in serial.entries)
    cache.clear_cache("all")  # the Ray workers extract and decode again
    par = zoo_core.compare(TINY, data, out_dir=tmp_path / "ray", executor="ray", **kw)
    assert all(e.status == "ok" for e in par.entries)
    assert results(par.entries) == results(serial.entries)  # bit for bit
    for e in par.entries:
        assert (Path(e.run_dir) / "zoo.log").is_file() and (Path(e.run_dir) / "entry.json").is_file()
    assert (tmp_path / "ray" / "leaderboard.md").is_file()
    again = zoo_core.compare(TINY, data, out_dir=tmp_path / "ray", executor="ray", **kw)
    assert {e.status for e in again.entries} == {"reused"}
    resumed = zoo_core.compare(TINY, data, out_dir=tmp_path / "serial", executor="ray", **kw)
    assert {e.status for e in resumed.entries} == {"reused"}  # Ray resumes a serial compare
    back = zoo_core.compare(TINY, data, out_dir=tmp_path / "ray", **kw)
    assert {e.status for e in back.entries} == {"reused"} and results(back.entries) == results(serial.entries)


def test_rank_through_ray_equals_serial(local_ray: Any, data: Path, tmp_path: Path) -> None:
    names = [TINY, "timm/test_efficientnet", "timm/test_vit", "timm/test_convnext"]
    serial = zoo_core.rank(names, data, folds=2, out_dir=tmp_path / "serial", **FAST)
    cache.clear_cache("all")
    par = zoo_core.rank(names, data, folds=2, out_dir=tmp_path / "ray", executor="ray", **FAST)
    assert [e.status for e in par.entries] == ["ok"] * 4

    def scores(r: Any) -> list[tuple[Any, ...]]:
        return [(e.backbone, e.logme, e.logme_std, e.probe_acc, e.probe_folds, e.feature_dim) for e in r.entries]

    assert scores(par) == scores(serial)
    assert (tmp_path / "ray" / "ranking.json").is_file() and len(list((tmp_path / "ray" / "logs").glob("*.log"))) == 4


@dataclass
class ExtractJob:
    """Two workers extract the same backbone's features at the same moment (a barrier of files)."""

    cfg: Any
    split: Any
    barrier: Path
    what: str = "extract"
    bar: bool = False

    def label(self, item: int) -> str:
        return str(item)

    def log_path(self, item: int) -> Path:
        return self.barrier / f"{item}.log"

    def run(self, item: int, say: Any = None) -> str:
        (self.barrier / f"ready-{item}").touch()
        deadline = time.monotonic() + 60
        while len(list(self.barrier.glob("ready-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        got = rank_features.extract(self.cfg, self.split, fallback_random=False, say=print).features
        return f"{got.path} {got.from_cache}"

    def lost(self, item: int, reason: str) -> str:
        return reason

    def finished(self, item: int, result: str, done: int, total: int) -> None:
        pass

    def failed(self, result: str) -> bool:
        return False


def test_concurrent_extractions_of_one_backbone_leave_one_valid_entry(local_ray: Any, data: Path,
                                                                      tmp_path: Path) -> None:
    cache.clear_cache("all")
    cfg = rank_features.candidate_config(TINY, {"weights": None, "image_size": 40}, False)
    split = zoo_core.data.load_data(str(data), val_fraction=cfg.val_fraction, seed=cfg.seed, progress=False)
    got = RayExecutor(progress=False).map(ExtractJob(cfg, split, tmp_path), [0, 1])
    assert got[0].split()[0] == got[1].split()[0] and "False" in (got[0] + got[1])  # both extracted
    entries = list((cache.cache_root() / "features").iterdir())
    assert [p.name.startswith(".tmp-") for p in entries] == [False]  # one entry, no leftovers
    again = rank_features.extract(cfg, split, fallback_random=False, say=print).features
    assert again.from_cache and str(again.path) == got[0].split()[0]


class Crashing(CompareJob):
    """Its worker dies (``os._exit``) on the finetune entry, noting each attempt in ``attempts``."""

    def __init__(self, runner: Any, attempts: Path) -> None:
        super().__init__(runner)
        self.attempts = attempts

    def run(self, item: tuple[str, str], say: Any = None) -> Any:
        if item[1] == FT:
            with open(self.attempts, "a") as f:
                f.write("attempt\n")
            os._exit(1)
        return super().run(item, say)


class CrashingRay(RayExecutor):
    def __init__(self, attempts: Path) -> None:
        super().__init__(max_retries=1, progress=False)
        self.attempts = attempts

    def map(self, job: Any, items: Any) -> list[Any]:
        return super().map(Crashing(job.runner, self.attempts), items)


def test_a_dead_worker_fails_its_entry_and_the_others_finish(local_ray: Any, data: Path, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts.txt"
    board = zoo_core.compare(TINY, data, strategies=STRATEGIES, out_dir=tmp_path / "out", epochs=1,
                             executor=CrashingRay(attempts), **FAST)
    status = {e.strategy: e for e in board.entries}
    dead = status[FT]
    assert dead.status == "failed" and dead.error.startswith("worker lost: ") and "died" in dead.error.lower()
    assert attempts.read_text().count("attempt") == 2  # Ray retried the system failure once (max_retries=1)
    assert "worker lost" in (Path(dead.run_dir) / "error.txt").read_text()
    assert not (Path(dead.run_dir) / "entry.json").exists()
    assert status[FE].finished and status[FULL].finished
    assert "failed" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_workers_lacking_a_plugin_are_named_before_any_work(local_ray: Any, data: Path, tmp_path: Path,
                                                            add_plugin: Any) -> None:
    from helpers_toys import KnownAdapter, plugin_of

    add_plugin(plugin_of(KnownAdapter()), name="raytoy")  # registered in this process only, not on the workers
    name = next(n for n in zoo_core.list_backbones() if zoo_core.backbones.registry.get_adapter(n)[1] == "raytoy")
    with pytest.raises(ZooError, match=rf"plugins missing on Ray workers: .*: {name}; install the same plugins"):
        zoo_core.rank([name, TINY], data, folds=2, out_dir=tmp_path / "r", executor="ray", **FAST)
    assert not (tmp_path / "r" / "ranking.json").exists()


def test_two_writers_of_one_key_keep_the_first_entry(tmp_path: Path) -> None:
    writers = [store.EntryWriter("pixels", "k1", tmp_path) for _ in range(2)]
    for i, w in enumerate(writers):
        w.open_array("pixels.npy", (2, 3), "uint8")[:] = i
    first = writers[0].commit({"n": 2})
    assert writers[1].commit({"n": 2}) == first and writers[1].meta == writers[0].meta
    assert [p.name for p in (tmp_path / "pixels").iterdir()] == ["k1"]
    found = store.open_entry(first, "pixels", "k1", lambda meta: {"pixels.npy": ((2, 3), "uint8", False)})
    assert found is not None and int(found[1]["pixels.npy"].max()) == 0  # the first writer's, intact
    stale = store.EntryWriter("pixels", "k1", tmp_path)  # same key, other contents: the old entry is replaced
    stale.open_array("pixels.npy", (1, 3), "uint8")[:] = 7
    stale.commit({"n": 1})
    found = store.open_entry(first, "pixels", "k1", lambda meta: {"pixels.npy": ((1, 3), "uint8", False)})
    assert found is not None and int(found[1]["pixels.npy"].max()) == 7


def test_executor_ray_without_ray_is_one_line_with_the_install_command(capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     data: Path, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    code, _, err = run(capsys, "rank", TINY, "--data", data, "--out", tmp_path / "r", "--weights", "none",
                       "--executor", "ray")
    assert code != 0 and "pip install 'backbone-zoo[ray]'" in one_line_error(err)
