"""The checks a Ray run makes before its first task, one small probe task per node.

- **Shared storage**: the driver writes a marker file with a fresh token into the output folder and the
  cache root; every node must read the same token back, else the entries would write where the driver
  (and the other nodes) never look.
- **Data path**: a relative data path is read relative to each worker's working directory; it is refused
  when a worker's differs from the driver's.
- **Plugins**: every node must provide every requested backbone (plugins are installed per node).
"""

from __future__ import annotations

import os
import secrets
import socket
from contextlib import suppress
from pathlib import Path
from typing import Any, Sequence

from ..backbones import registry
from ..backbones import registry as plugins
from ..errors import UnknownBackboneError, ZooError

MARKER_PREFIX = ".zoo-shared-check-"


def write_markers(folders: Sequence[Path]) -> str:
    """Write a fresh token into a marker file in each of ``folders``; returns the token."""
    token = secrets.token_hex(8)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{MARKER_PREFIX}{token}").write_text(token)
    return token


def remove_markers(folders: Sequence[Path], token: str) -> None:
    """Delete the marker files :func:`write_markers` wrote."""
    for folder in folders:
        with suppress(OSError):
            (folder / f"{MARKER_PREFIX}{token}").unlink()


def probe(folders: Sequence[str], token: str, backbones: Sequence[str]) -> dict[str, Any]:
    """Run on a worker: its node, the folders whose marker it cannot read, the backbones it lacks, its cwd."""
    unseen = []
    for folder in folders:
        try:
            ok = (Path(folder) / f"{MARKER_PREFIX}{token}").read_text() == token
        except OSError:
            ok = False
        if not ok:
            unseen.append(folder)
    missing = []
    for name in backbones:
        try:
            registry.get_adapter(name)
        except UnknownBackboneError:
            missing.append(name)
    return {"node": socket.gethostname(), "unseen": unseen, "missing": missing, "cwd": os.getcwd()}


def _distribution(backbone: str) -> str | None:
    """The distribution that provides ``backbone`` on the driver (for the install hint)."""
    try:
        _, name = registry.get_adapter(backbone)
        pm = plugins.get_plugin_manager()
        return plugins.distribution_of(pm, pm.get_plugin(name))[0]
    except Exception:  # noqa: BLE001 - only a hint
        return None


def _names(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", … ({len(items)} in all)" if len(items) > n else "")


def check(reports: Sequence[dict[str, Any]], *, relative: dict[str, str]) -> None:
    """One-line :class:`ZooError` when a node does not see the shared folders, lacks plugins, or would read a
    relative path (``relative``: what → path, e.g. the data or output folder) from another working directory."""
    unseen = [f"{r['node']}: {', '.join(r['unseen'])}" for r in reports if r["unseen"]]
    if unseen:
        raise ZooError(f"Ray workers do not see the driver's output folder or BACKBONE_ZOO_CACHE ({'; '.join(unseen)}); "
                       "put both on a file system every node mounts at the same path (--out, BACKBONE_ZOO_CACHE)")
    missing = [r for r in reports if r["missing"]]
    if missing:
        dists = sorted({d for r in missing for b in r["missing"] if (d := _distribution(b))})
        hint = f" (pip install {' '.join(dists)} on them)" if dists else ""
        raise ZooError("plugins missing on Ray workers: " + "; ".join(f"{r['node']}: {_names(r['missing'])}"
                                                                     for r in missing)
                       + f"; install the same plugins on every node{hint}")
    elsewhere = sorted({r["node"] for r in reports if r["cwd"] != os.getcwd()})
    for what, path in relative.items():
        if elsewhere:
            raise ZooError(f"the {what} path {path!r} is relative and the Ray workers on {', '.join(elsewhere)} run "
                           "in another directory; pass an absolute path every node can read")
