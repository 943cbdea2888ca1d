"""backbone-zoo plugin: every timm model, named ``timm/<model>`` or ``timm/<model>.<tag>``."""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

import timm
import torch
from timm.data import resolve_data_config
from timm.models import get_pretrained_cfg
from timm.models._manipulate import group_with_matcher
from torch import nn

from zoo_core.plugin_kit import (
    BackboneAdapter,
    DataConfig,
    InputSizes,
    Stages,
    WeightsError,
    find_head,
    hookimpl,
    join_trailing_norm,
    member_names,
    offline_hint,
    torch_hub_checkpoint,
    under,
)

PREFIX = "timm/"


@functools.lru_cache(maxsize=1)
def _pretrained_tags() -> dict[str, list[str]]:
    """Architecture → its pretrained tags, in timm's order (the first is timm's default)."""
    tags: dict[str, list[str]] = {}
    for full in timm.list_models(pretrained=True):
        arch, _, tag = full.partition(".")
        tags.setdefault(arch, []).append(tag)
    return tags


def _split(name: str) -> tuple[str, str | None]:
    arch, _, tag = name[len(PREFIX):].partition(".")
    return arch, tag or None


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except Exception:  # noqa: BLE001
        return os.path.expanduser("~/.cache/huggingface/hub")


class TimmAdapter(BackboneAdapter):
    """timm models: heads via ``reset_classifier``/``get_classifier``, stages from ``group_matcher``,
    preprocessing from ``pretrained_cfg`` through ``resolve_data_config``."""

    family = "timm"

    def names(self) -> Sequence[str]:
        """Every architecture in ``timm.list_models()`` plus every pretrained ``arch.tag``."""
        archs = [PREFIX + n for n in timm.list_models()]
        tagged = [PREFIX + n for n in timm.list_models(pretrained=True)]
        return list(dict.fromkeys(archs + tagged))

    def _model_name(self, name: str, weights: str | None) -> str:
        arch, tag = _split(name)
        if weights not in (None, "DEFAULT"):
            if weights not in _pretrained_tags().get(arch, []):
                raise WeightsError(
                    f"{name} has no pretrained tag {weights!r}; choose one of "
                    f"{_pretrained_tags().get(arch, [])}, 'DEFAULT', None or a local checkpoint path"
                )
            tag = weights
        return f"{arch}.{tag}" if tag else arch

    def create(self, name: str, *, weights: str | None = None, num_classes: int | None = 1000) -> nn.Module:
        """``timm.create_model`` with ``pretrained=weights is not None`` (Hugging Face cache)."""
        model_name = self._model_name(name, weights)
        kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
        if weights is None:
            return timm.create_model(model_name, pretrained=False, **kwargs)
        if not self.has_pretrained(name):
            raise WeightsError(
                f"No pretrained weights exist for {name}. Use weights=None for random init, or "
                f"pick a pretrained variant: `zoo list '{PREFIX}{_split(name)[0]}*' --pretrained`."
            )
        try:
            return timm.create_model(model_name, pretrained=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - offline, missing file, bad cache entry
            cfg = get_pretrained_cfg(model_name)
            repo = getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", "") or model_name
            raise WeightsError(
                f"{name}: pretrained weights ({repo}) unavailable: {type(exc).__name__}: {exc}. "
                + offline_hint(name, f"the Hugging Face cache {_hf_cache_dir()} (models--"
                               f"{str(repo).replace('/', '--')}; set HF_HUB_OFFLINE=1 to use it offline)")
            ) from exc

    def replace_head(self, model: nn.Module, num_classes: int) -> nn.Module:
        """timm's ``reset_classifier(num_classes)``."""
        model.reset_classifier(num_classes)
        return model

    def head_name(self, model: nn.Module) -> str:
        """The module ``get_classifier()`` returns."""
        return find_head(model)

    def stages(self, model: nn.Module) -> Stages:
        """One stage per group of ``model.group_matcher(coarse=True)`` (a ViT: stem, one per block, the
        final norm with the last block); unmatched non-head layers (a pre-logits conv) form a last stage
        ``neck``, which joins the last block when it is normalisation layers only."""
        head = self.head_name(model)
        names = [n for n in member_names(model) if not under(n, head)]
        stateful = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
        try:
            groups = group_with_matcher(((n, None) for n in names), model.group_matcher(coarse=True))
        except (AttributeError, NotImplementedError):
            return super().stages(model)
        stages: Stages = []
        ordered = [groups[k] for k in sorted(groups)]
        for i, members in enumerate(ordered):
            last = i == len(ordered) - 1 and len(ordered) > 1
            if last and not any(m in stateful for m in members):
                continue
            stages.append((self._stage_name(i, members, last), members))
        return join_trailing_norm(model, stages)

    @staticmethod
    def _stage_name(i: int, members: list[str], last: bool) -> str:
        if i == 0:
            return "stem"
        parts = [m.split(".") for m in members]
        common = []
        for level in zip(*parts):
            if len(set(level)) != 1:
                break
            common.append(level[0])
        if common:
            return ".".join(common)
        tops = list(dict.fromkeys(".".join(p[:2]) if len(p) > 2 else p[0] for p in parts))
        return "+".join(tops) if len(tops) <= 3 else ("neck" if last else f"group{i}")

    def input_sizes(self, name: str) -> InputSizes:
        """Fixed at the patch embedding's size for a ViT-like model built for one size (timm's
        ``strict_img_size``), whole patches for a dynamic-size one, else any size."""
        return _input_sizes(_split(name)[0])

    def weights_available(self, name: str) -> bool | None:
        """True when the DEFAULT weights are in the Hugging Face cache (or torch hub's, for a URL)."""
        if not self.has_pretrained(name):
            return False
        cfg = get_pretrained_cfg(self._model_name(name, None))
        return _cached(cfg) if cfg is not None else None

    def data_config(self, name: str, weights: str | None = "DEFAULT") -> DataConfig:
        """``resolve_data_config`` on the weights' ``pretrained_cfg``."""
        cfg = get_pretrained_cfg(self._model_name(name, weights if weights != "DEFAULT" else None))
        dc = resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg else {})
        return DataConfig(
            input_size=tuple(dc["input_size"]),
            mean=tuple(float(m) for m in dc["mean"]),
            std=tuple(float(s) for s in dc["std"]),
            interpolation=str(dc["interpolation"]),
            crop_pct=float(dc["crop_pct"]),
        )

    def available_weights(self, name: str) -> list[str]:
        """Pretrained tags of the architecture (just the named one for ``arch.tag`` names)."""
        arch, tag = _split(name)
        tags = _pretrained_tags().get(arch, [])
        return [tag] if tag in tags else ([] if tag else list(tags))

    def describe(self, name: str) -> dict[str, Any]:
        """License, paper and Hugging Face repo from ``pretrained_cfg``."""
        cfg = get_pretrained_cfg(self._model_name(name, None))
        if cfg is None:
            return {}
        keys = ("hf_hub_id", "license", "paper_ids", "paper_name", "description")
        return {k: getattr(cfg, k) for k in keys if getattr(cfg, k, None)}

    def feature_dim(self, model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> int:
        """``head_hidden_size`` (the pre-logits width, when timm's head adds a layer) or ``num_features``."""
        width = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
        return int(width) if width else super().feature_dim(model, input_size)

    def features(self, model: nn.Module, images):  # type: ignore[override]
        """Pre-logits features through ``forward_features`` + ``forward_head(pre_logits=True)``."""
        return model.forward_head(model.forward_features(images), pre_logits=True).flatten(1)


@functools.lru_cache(maxsize=256)
def _input_sizes(arch: str) -> InputSizes:
    """What :meth:`TimmAdapter.input_sizes` reads off a meta-device build of ``arch``."""
    try:
        with torch.device("meta"):
            pe = getattr(timm.create_model(arch, pretrained=False), "patch_embed", None)
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta: no constraint known
        return InputSizes()
    size, patch = getattr(pe, "img_size", None), getattr(pe, "patch_size", None)
    if not size or not patch or getattr(pe, "dynamic_img_pad", False):
        return InputSizes()
    if getattr(pe, "strict_img_size", False) and size[0] == size[1]:
        return InputSizes(fixed=(int(size[0]),), why=f"its patch embedding is built for {size[0]}x{size[1]} inputs")
    return InputSizes(multiple_of=int(patch[0]), min_size=int(patch[0]), why=f"it takes whole {patch[0]}x{patch[1]} patches")


def _cached(cfg: Any) -> bool:
    """Whether a pretrained config's file is on disk: the Hugging Face cache, torch hub's, or a local file."""
    if getattr(cfg, "file", None):
        return os.path.isfile(cfg.file)
    repo = getattr(cfg, "hf_hub_id", None)
    if repo:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        files = (getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin",
                 "open_clip_pytorch_model.bin", "open_clip_model.safetensors")
        return any(isinstance(try_to_load_from_cache(repo, f), str) for f in files if f)
    url = getattr(cfg, "url", None)
    return bool(url) and torch_hub_checkpoint(url).is_file()


@hookimpl
def register_backbones(register: Callable[..., None]) -> None:
    """Register the timm adapter."""
    register(TimmAdapter())
