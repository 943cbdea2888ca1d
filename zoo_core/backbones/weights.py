"""Weight files: reading local checkpoints safely, fitting them to a model, and cache locations."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import WeightsError
from ..util import few

RANDOM_INIT = "RANDOM INIT"  # how tables and logs label a model that runs without pretrained weights


def weights_label(weights: object) -> str:
    """How a table names ``weights``: ``"pretrained"`` (DEFAULT), :data:`RANDOM_INIT` (None), else the tag/file."""
    return RANDOM_INIT if weights is None else "pretrained" if weights == "DEFAULT" else str(weights)


LOCAL_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")


def is_local_path(weights: object) -> bool:
    """True when ``weights`` names a local checkpoint file rather than a weight tag."""
    if isinstance(weights, Path):
        return True
    if not isinstance(weights, str) or weights in ("DEFAULT", ""):
        return False
    return weights.lower().endswith(LOCAL_SUFFIXES) or os.sep in weights or os.path.exists(weights)


def load_refusal(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` (or safetensors) could not read a file, in one line —
    without torch's advice to switch the safety off."""
    text = str(exc)
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            return (f"it holds pickled Python objects ({found.group(1)}), which are never loaded because "
                    "unpickling can run arbitrary code; re-save only the tensors — torch.save(model.state_dict(), "
                    "path) — or as .safetensors")
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
        detail = f" ({' '.join(found.group(1).split())})" if found else ""
        return f"it is not a torch checkpoint, or it is damaged{detail}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` or torch checkpoint (``weights_only=True``) as a flat state dict.

    Unwraps the usual containers (``{"model": …}``, ``{"state_dict": …}``) and strips the
    ``module.`` / ``_orig_mod.`` prefixes that DDP and ``torch.compile`` add.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file {str(p)!r} does not exist")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - reported with the file name
        reason = load_refusal(exc)
        need = "" if "pickled" in reason else ". It must be a state dict saved with torch.save or safetensors"
        raise WeightsError(f"cannot read weights file {str(p)!r}: {reason}{need}") from exc
    for key in ("model", "state_dict", "model_state_dict", "module"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {str(p)!r} does not hold a state dict of tensors")
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], *, head: str | None, source: str) -> list[str]:
    """Copy ``state`` into ``model``; a head of another shape is skipped (the fresh head stays).

    Any other missing, unexpected or mis-shaped key raises :class:`WeightsError` listing them
    (``head=None``: every key must fit, the head's included). Returns the keys that were skipped because
    they belong to a differently-shaped head.
    """
    own = model.state_dict()
    head_prefix = head + "." if head else None
    skipped, mismatched = [], []
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            (skipped if head_prefix and k.startswith(head_prefix) else mismatched).append(
                f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            )
    usable = {k: v for k, v in state.items() if not any(s.startswith(k + " ") for s in skipped)}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    missing_body = [k for k in missing if not (skipped and k.startswith(head_prefix))]
    unexpected = [k for k in state if k not in own]
    problems = []
    if missing_body:
        problems.append(f"missing keys: {few(missing_body)}")
    if unexpected:
        problems.append(f"unexpected keys: {few(unexpected)}")
    if mismatched:
        problems.append(f"mis-shaped keys: {few(mismatched)}")
    if problems:
        raise WeightsError(f"weights {source!r} do not fit this model — " + "; ".join(problems))
    model.load_state_dict(usable, strict=False)
    return [s.split(" ")[0] for s in skipped]


def torch_hub_checkpoint(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` caches ``url`` (under ``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def offline_hint(name: str, where: str) -> str:
    """The sentence every 'pretrained weights unavailable' error ends with."""
    return (
        f"Put the checkpoint file at {where}, or pass weights='path/to/checkpoint.pth' "
        f"(or .safetensors) for a local file, or weights=None for an explicitly random-init {name}."
    )
