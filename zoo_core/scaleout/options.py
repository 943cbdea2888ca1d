"""The command-line options of ``zoo compare`` and ``zoo rank`` that choose where their entries run."""

from __future__ import annotations

import argparse

from .executor import Executor, LocalExecutor
from .ray_backend import RayExecutor


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """``--executor``, ``--ray-address``, ``--gpus-per-entry``, ``--cpus-per-entry``, ``--max-retries``."""
    g = p.add_argument_group("scale out (Ray)")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: entries one after another in this process (default); ray: each entry a Ray task "
                        "on its own GPU or cores (pip install 'backbone-zoo[ray]')")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join a Ray cluster: 'auto' (this node's) or 'ray://head:10001' (default: start a local "
                        "Ray instance on this machine)")
    g.add_argument("--gpus-per-entry", type=float, default=None, metavar="G",
                   help="GPUs each entry holds (default 1 when the cluster has GPUs, else 0; 0.5 shares a GPU)")
    g.add_argument("--cpus-per-entry", type=float, default=1, metavar="C",
                   help="CPU cores each entry holds (default 1)")
    g.add_argument("--max-retries", type=int, default=2, metavar="N",
                   help="reruns of an entry whose worker or node died (never of an error in training; default 2)")


def executor_from_args(args: argparse.Namespace, progress: bool) -> Executor:
    """The executor the options ask for (Ray is imported only when its first entry runs)."""
    if args.executor == "local":
        return LocalExecutor(progress)
    return RayExecutor(args.ray_address, gpus_per_entry=args.gpus_per_entry, cpus_per_entry=args.cpus_per_entry,
                       max_retries=args.max_retries, progress=progress)
