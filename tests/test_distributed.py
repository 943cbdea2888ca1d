"""torch.distributed: samplers, the torchrun launcher, and a real 2-process gloo run on loopback.

The end-to-end test launches ``python -m torch.distributed.run --standalone --nproc_per_node 2
tests/ddp_entry.py`` (2 CPU processes, gloo, rendezvous on this machine only) for a short fine-tune, a
resume of it and a feature-extraction run on generated PNGs, and compares with the same runs in this
process (one process, same global batch of 8).

Tolerances (stated in docs/distributed.md too): the fine-tune uses ``timm/test_vit`` (LayerNorm, no
BatchNorm), where 2 × 4 images with DDP's gradient average is the single-process step on 8 up to float
summation order — losses and accuracies must agree within 1e-4. Sharded feature extraction must give the
same features as one process within 1e-5 and so the same converged head fit.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo_core.distributed import (
    DistributedEpochSampler,
    ShardSampler,
    epoch_permutation,
    per_rank_batch,
    shard_range,
    torchrun_command,
)
from zoo_core.errors import ZooError
from zoo_core.training import EpochSampler

ENTRY = Path(__file__).with_name("ddp_entry.py")
TOL_FINETUNE = 1e-4  # |single − DDP| for losses / accuracies of the LayerNorm fine-tune
TOL_FEATURES = 1e-5  # max |single − DDP| of a cached feature
# 13 + 13 + 11 images, val_fraction 0.25 → 28 train (14 per rank: no padding, so the global batches of
# 8 are exactly the single-process ones) and 9 val (5 + 4 per rank: unequal numbers of eval batches)
CLASS_SIZES = (13, 13, 11)


def _make_images(root: Path) -> Path:
    for c, n in enumerate(CLASS_SIZES):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(n):
            rng = np.random.default_rng(c * 1000 + i)
            img = rng.integers(0, 100, (32, 32, 3), dtype=np.uint8)
            img[..., c] += 120
            y, x = rng.integers(0, 16, 2)
            img[y:y + 12, x:x + 12] = 255
            Image.fromarray(img).save(d / f"{i:02d}.png")
    return root


def _entry_module():
    spec = importlib.util.spec_from_file_location("ddp_entry", ENTRY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _torchrun(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ENTRY), *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks (their own session)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout}s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


# ---- samplers and sharding --------------------------------------------------------------------------
@pytest.mark.parametrize("n,world,batch", [(28, 2, 8), (36, 3, 6), (40, 4, 8)])
def test_rank_batches_together_are_the_single_process_batches(n: int, world: int, batch: int) -> None:
    local = per_rank_batch(batch, world)
    for epoch in (0, 1):
        single = EpochSampler(n, seed=3)
        single.set_epoch(epoch)
        order = list(single)
        assert order == epoch_permutation(n, 3, epoch)
        shards = []
        for r in range(world):
            s = DistributedEpochSampler(n, num_replicas=world, rank=r, seed=3)
            s.set_epoch(epoch)
            shards.append(list(s))
        assert sorted(i for sh in shards for i in sh) == list(range(n))  # n divisible: no padding
        for k in range(0, n, batch):
            ranks_k = {i for sh in shards for i in sh[k // world: k // world + local]}
            assert ranks_k == set(order[k:k + batch])
    e0 = DistributedEpochSampler(n, num_replicas=world, rank=0, seed=3)
    e1 = DistributedEpochSampler(n, num_replicas=world, rank=0, seed=3)
    e1.set_epoch(1)
    assert list(e0) != list(e1)  # per-epoch seeding


def test_uneven_training_shards_are_padded_like_distributed_sampler() -> None:
    shards = [list(DistributedEpochSampler(33, num_replicas=2, rank=r, seed=0)) for r in range(2)]
    assert [len(s) for s in shards] == [17, 17]
    assert set(shards[0]) | set(shards[1]) == set(range(33))


@pytest.mark.parametrize("n,world", [(0, 2), (1, 2), (9, 2), (10, 3), (7, 7), (5, 8)])
def test_shards_cover_every_item_once(n: int, world: int) -> None:
    blocks = [shard_range(n, r, world) for r in range(world)]
    assert [i for b in blocks for i in b] == list(range(n))  # contiguous, in order
    assert max(len(b) for b in blocks) - min(len(b) for b in blocks) <= 1
    strided = [list(ShardSampler(n, r, world)) for r in range(world)]
    assert sorted(i for s in strided for i in s) == list(range(n))  # evaluation: no padding
    assert [len(ShardSampler(n, r, world)) for r in range(world)] == [len(s) for s in strided]


def test_global_batch_must_split_evenly() -> None:
    assert per_rank_batch(32, 4) == 8 and per_rank_batch(7, 1) == 7
    with pytest.raises(ZooError, match="--batch-size.*multiple of the 3 processes.*use e.g. 30"):
        per_rank_batch(32, 3)
    with pytest.raises(ZooError, match="use e.g. 4"):
        per_rank_batch(2, 4)


def test_torchrun_command() -> None:
    cmd = torchrun_command(["train", "resnet18", "--data", "d", "--nproc", "4", "--epochs", "2"], 4)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    rest = cmd[3:]
    assert rest == ["--standalone", "--nproc_per_node", "4", "-m", "zoo_core.cli", "train", "resnet18",
                    "--data", "d", "--epochs", "2"]
    multi = torchrun_command(["resnet18", "--nproc=8"], 8, ["--nnodes", "2", "--rdzv-endpoint", "h:29400"])
    assert "--standalone" not in multi and "--nproc=8" not in multi
    assert multi[3:] == ["--nnodes", "2", "--rdzv-endpoint", "h:29400", "--nproc_per_node", "8", "-m",
                         "zoo_core.cli", "train", "resnet18"]
    with pytest.raises(ZooError, match="--nproc"):
        torchrun_command(["resnet18"], 0)


# ---- a real torchrun run ------------------------------------------------------------------------------
def test_torchrun_two_cpu_processes_match_one_process(tmp_path: Path, zoo_home) -> None:
    data = _make_images(tmp_path / "data")
    runs = "finetune_vit,resume:finetune_vit:3,features"
    env = dict(os.environ, BACKBONE_ZOO_CACHE=str(tmp_path / "ddp-cache"), OMP_NUM_THREADS="1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    if "lo" in {name for _, name in socket.if_nameindex()}:
        env["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    proc = _torchrun([str(data), str(tmp_path / "ddp-runs"), str(tmp_path / "ddp"), runs], env)
    assert proc.returncode == 0, proc.stdout[-6000:]

    # the same runs in this process: one rank, the same global batch
    entry = _entry_module()
    single: dict = {}
    for name in runs.split(","):
        if name.startswith("resume:"):
            _, of, epochs = name.split(":")
            single[name] = entry.resume(single[of]["run_dir"], int(epochs))
        else:
            single[name] = entry.run(name, str(data), str(tmp_path / "single-runs"))

    ranks = [json.loads((tmp_path / f"ddp.{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # one run directory per run, named by rank 0 (rank 1 started a second later), written by rank 0 only
    run_dirs = sorted(p.name for p in (tmp_path / "ddp-runs").iterdir())
    assert len(run_dirs) == 2, run_dirs
    for name in runs.split(","):
        assert ranks[0][name]["run_dir"] == ranks[1][name]["run_dir"]
        assert Path(ranks[0][name]["run_dir"]).name in run_dirs
    assert ranks[0]["resume:finetune_vit:3"]["run_dir"] == ranks[0]["finetune_vit"]["run_dir"]
    ft_dir = Path(ranks[0]["finetune_vit"]["run_dir"])
    assert {"config.json", "best.pt", "last.pt", "metrics.jsonl", "summary.json", "curves.png"} <= \
        {p.name for p in ft_dir.iterdir()}
    assert not [p for p in (tmp_path / "ddp-runs").rglob("*") if p.name.startswith(".")]  # no temp files
    config = json.loads((ft_dir / "config.json").read_text())
    assert config["world_size"] == 2 and config["batch_size_per_rank"] == 4 and config["train"]["batch_size"] == 8

    # fine-tune and its resume: same metrics as one process, epoch by epoch, on both ranks
    for name in ("finetune_vit", "resume:finetune_vit:3"):
        assert len(ranks[0][name]["history"]) == len(single[name]["history"])
        for row_1p, row_r0, row_r1 in zip(single[name]["history"], ranks[0][name]["history"],
                                          ranks[1][name]["history"]):
            assert row_r0 == row_r1 or all(row_r0[k] == row_r1[k] for k in ("train_loss", "val_loss", "val_acc"))
            for k in ("train_loss", "train_acc", "val_loss", "val_acc"):
                assert abs(row_1p[k] - row_r0[k]) <= TOL_FINETUNE, (name, row_1p["epoch"], k, row_1p[k], row_r0[k])
    assert len(ranks[0]["resume:finetune_vit:3"]["history"]) == 3
    metrics_rows = (ft_dir / "metrics.jsonl").read_text().splitlines()
    assert len(metrics_rows) == 3  # the resumed run rewrote its history without duplicates
    summary = json.loads((ft_dir / "summary.json").read_text())
    assert sum(map(sum, summary["confusion_matrix"])) == 9  # sharded evaluation: every val image once
    # the per-image predictions are gathered back into item order: the same images as one process
    ddp_rows = list(csv.DictReader((ft_dir / "val_predictions.csv").open()))
    one_rows = list(csv.DictReader((Path(single["resume:finetune_vit:3"]["run_dir"]) / "val_predictions.csv").open()))
    assert [r["item"] for r in ddp_rows] == [r["item"] for r in one_rows] and len({r["item"] for r in ddp_rows}) == 9
    assert [r["target"] for r in ddp_rows] == [r["target"] for r in one_rows]
    assert sum(int(r["correct"]) for r in ddp_rows) == sum(row[i] for i, row in enumerate(summary["confusion_matrix"]))

    # feature extraction (and the fine-tune's linear probe, LP-FT): each rank extracted its shard once; rank 0
    # wrote one entry per backbone and split
    entries = [p for p in (tmp_path / "ddp-cache" / "features").iterdir()]
    assert len(entries) == 4 and not [p for p in entries if p.name.startswith(".")], entries

    def part(p: Path) -> tuple[str, str]:
        parts = json.loads((p / "meta.json").read_text())["parts"]
        return parts["backbone"], parts["split"]

    metas = {part(p): p for p in entries}
    assert {json.loads((p / "meta.json").read_text())["world_size"] for p in entries} == {2}
    single_cache = zoo_home.zoo_cache / "features"
    assert {part(p) for p in single_cache.iterdir()} == set(metas)
    for p in single_cache.iterdir():
        split = part(p)[1]
        a, b = np.load(p / "features.npy"), np.load(metas[part(p)] / "features.npy")
        assert a.shape == b.shape and a.shape[0] == {"train": 28, "val": 9}[split]
        assert float(np.abs(a - b).max()) <= TOL_FEATURES
        assert np.array_equal(np.load(p / "labels.npy"), np.load(metas[part(p)] / "labels.npy"))
    for k in ("train_loss", "train_acc", "val_loss", "val_acc"):
        ref = single["features"]["metrics"][k]
        assert abs(ranks[0]["features"]["metrics"][k] - ref) <= 1e-4
        assert abs(ranks[1]["features"]["metrics"][k] - ref) <= 1e-4  # rank 1's head saw every feature too
    summary = json.loads((Path(ranks[0]["features"]["run_dir"]) / "summary.json").read_text())
    assert sum(map(sum, summary["confusion_matrix"])) == 9  # every validation image counted once
