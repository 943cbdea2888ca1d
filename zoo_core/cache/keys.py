"""Cache keys: where the cache lives and what identifies an entry (backbone, weights, data, split, …)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path
from typing import Any

import PIL
import torch
import torchvision
from torch import nn

from ..backbones.adapter import BackboneAdapter, DataConfig
from ..backbones.registry import get_adapter
from ..backbones.weights import is_local_path
from ..util import digest, under
from .passes import PASS_MODES

FORMAT_VERSION = 1  # part of every key and every meta.json; bump it to invalidate all existing entries
_file_hashes: dict[tuple[str, int, int, int], str] = {}  # (path, size, mtime_ns, inode) → sha256


def cache_root() -> Path:
    """Root of the feature, pixel and ONNX export caches: ``$BACKBONE_ZOO_CACHE`` or ``~/.cache/backbone-zoo``."""
    env = os.environ.get("BACKBONE_ZOO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "backbone-zoo"


class FeatureKey(str):
    """A cache key (hex digest) that remembers the parts it was made from, for ``meta.json``."""

    parts: dict[str, Any]

    def __new__(cls, digest: str, parts: dict[str, Any]) -> FeatureKey:
        obj = super().__new__(cls, digest)
        obj.parts = parts
        return obj


def _file_sha256(path: Path) -> str:
    """SHA-256 of a file's content, memoised per path, size, mtime and inode."""
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if memo not in _file_hashes:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _file_hashes[memo] = h.hexdigest()
    return _file_hashes[memo]


def _version(module: Any) -> str:
    return str(module.__version__).split("+")[0]


def weights_identity(weights: object, backbone: str | None = None) -> Any:
    """What identifies ``weights`` in a cache key: ``None``, a weight tag, or a local file's content.

    ``"DEFAULT"`` is resolved to the concrete tag the backbone's plugin would load (so a library
    upgrade that changes the default misses the cache); a local checkpoint is identified by its
    SHA-256 (memoised per path, size and mtime), so overwriting the file misses the cache.
    """
    if weights is None or (isinstance(weights, str) and weights.strip().lower() in ("", "none", "null")):
        return None
    if is_local_path(weights):
        path = Path(os.fspath(weights)).expanduser().resolve()  # type: ignore[arg-type]
        if path.is_file():
            return {"file": path.name, "sha256": _file_sha256(path)}
        return {"file": str(path), "missing": True}
    tag = str(weights)
    if tag == "DEFAULT" and backbone:
        try:
            available = get_adapter(backbone)[0].available_weights(backbone)
            if available:
                return f"DEFAULT={available[0]}"
        except Exception:  # noqa: BLE001 - the key stays "DEFAULT"; creating the model reports errors
            pass
    return tag


def feature_key(*, backbone: str, weights: str | os.PathLike | None, data_config: DataConfig,
                fingerprint: str, split: str, precision: str,
                pass_modes: tuple[str, ...] = PASS_MODES) -> FeatureKey:
    """Cache key (hex digest, a ``str``) of one backbone's features on one dataset split.

    :param weights: ``"DEFAULT"``, ``None``/``"None"``, a weight tag, or a local checkpoint path (its
        contents are hashed, so an overwritten file misses).
    :param precision: the *resolved* precision (``resolve_precision(...)``), not ``"auto"``.
    :param pass_modes: the pass modes extraction tries, ``policy.pass_modes(requested precision, device,
        number of images)`` (what a training run passes; the default names every mode), so entries made
        under another pass policy (say ``auto`` with int8 against an explicit ``fp32``) never mix.
    """
    parts = {
        "format": FORMAT_VERSION, "kind": "features", "backbone": backbone,
        "weights": weights_identity(weights, backbone), "data_config": data_config.to_dict(),
        "fingerprint": str(fingerprint), "split": str(split), "precision": str(precision),
        "pass": "+".join(pass_modes),
        "torch": _version(torch), "torchvision": _version(torchvision),
    }
    return FeatureKey(digest(parts), parts)


def pixel_key(*, fingerprint: str, split: str, data_config: DataConfig) -> FeatureKey:
    """Cache key of decoded pixels: dataset fingerprint, split, resize size, input size, interpolation."""
    parts = {
        "format": FORMAT_VERSION, "kind": "pixels", "fingerprint": str(fingerprint), "split": str(split),
        "resize_size": data_config.resize_size, "image_size": list(data_config.image_size),
        "channels": data_config.input_size[0], "interpolation": data_config.interpolation,
        "torchvision": _version(torchvision), "pillow": PIL.__version__,
    }
    return FeatureKey(digest(parts), parts)


def onnx_key(*, fingerprint: str, features: str, input_shape: tuple[int, ...], opset: int) -> FeatureKey:
    """Cache key of a backbone's features graph exported to ONNX: the model's fingerprint (backbone and
    weights, :func:`model_fingerprint`), what reads its features (the adapter), the input's C×H×W, the
    opset and the exporter's versions."""
    parts = {
        "format": FORMAT_VERSION, "kind": "onnx", "fingerprint": str(fingerprint), "features": features,
        "input_shape": [int(d) for d in input_shape], "opset": int(opset), "torch": _version(torch),
        "onnxscript": _dist_version("onnxscript"),
    }
    return FeatureKey(digest(parts), parts)


def _dist_version(name: str) -> str | None:
    """An installed distribution's version, None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def model_fingerprint(model: nn.Module, adapter: BackboneAdapter | None = None) -> str:
    """Hash of the backbone's state (every parameter and buffer except the head's).

    Stored with each feature entry and compared on read, so features made by other weights (a
    different random init, a retrained checkpoint under the same name) are never served.
    """
    head = adapter.head_name(model) if adapter is not None else ""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in model.state_dict().items():
        if head and under(name, head):
            continue
        t = t.detach()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if t.device.type == "meta" or t.numel() == 0:
            continue
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]
