"""Training augmentation as a policy: the named augmentations, their transforms, and the fixed views that
check each one against the data before fine-tuning.

The default augmentations are ``crop`` (``RandomResizedCrop`` over :data:`zoo_core.data.TRAIN_CROP_SCALE`
of the area, aspect 3/4–4/3) and ``flip`` (horizontal, p = 0.5). A policy is a tuple of their names:
``()`` trains on the evaluation view, ``("crop", "flip")`` is the classic ImageNet-style recipe.

``--augment`` takes ``auto`` (the default: each augmentation is kept only when it preserves the labels of
*this* data, see :mod:`zoo_core.training.probe`), ``on`` / ``off``, or an explicit comma list
(``crop``, ``flip``, ``crop,flip``, ``none``). :func:`parse_policy` turns any of these into a tuple.

:data:`CHECKS` says how each augmentation is checked and :func:`check_view` gives the deterministic views the
check extracts features of (one seeded random crop per image, drawn from the training distribution; the left
half of an image and of its mirror image), so the check is repeatable and its features can be cached.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .adapter import DataConfig
from .data import TRAIN_CROP_SCALE, _interpolation, _pipeline, eval_transform
from .errors import ZooError

AUGMENTATIONS: tuple[str, ...] = ("crop", "flip")
"""The augmentations a policy may name, in the order they are applied."""

AUTO = "auto"
"""The policy that keeps each default augmentation only when the check says it preserves labels."""

CHECK_TOLERANCE: dict[str, float] = {"flip": 0.02, "crop": 0.05}
"""Largest drop of the linear probe's validation top-1 (a fraction) on an augmentation's check view, against
the plain view, at which the augmentation is kept. A mirrored image is the same picture when labels do not
depend on orientation, so flipping must cost almost nothing; a crop loses part of the picture even when the
label survives (the probe was fit on whole images), so it is allowed more."""

VIEW_SEED = 0
"""Seed of the check views' random crops (fixed, so the views of a split are the same in every run and cache)."""

ARGUMENT_HELP = "auto, on, off, or a comma list of " + ", ".join(AUGMENTATIONS) + " (or none)"


def parse_policy(value: Any) -> tuple[str, ...] | str:
    """``value`` (None, a bool, ``"auto"``, ``"on"``/``"off"``, ``"crop,flip"``, a list) → :data:`AUTO` or a
    tuple of names in :data:`AUGMENTATIONS` order; anything else is a one-line :class:`ZooError`."""
    if value is None:
        return AUTO
    if isinstance(value, bool):
        return AUGMENTATIONS if value else ()
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if text in ("on", "true", "yes", "all", "default"):
            return AUGMENTATIONS
        if text in ("off", "false", "no", "none", ""):
            return ()
        names: Sequence[Any] = [t.strip() for t in text.split(",") if t.strip()]
    elif isinstance(value, (list, tuple)):
        names = value
    else:
        raise ZooError(f"--augment must be {ARGUMENT_HELP}, got {value!r}")
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ZooError(f"--augment: unknown augmentation {unknown[0]!r}; use {ARGUMENT_HELP}")
    return tuple(a for a in AUGMENTATIONS if a in names)


def valid_policy(value: Any) -> bool:
    """True when :func:`parse_policy` accepts ``value`` (the option check of ``augment``)."""
    try:
        parse_policy(value)
    except ZooError:
        return False
    return True


def for_strategy(value: Any, default_augment: bool) -> tuple[str, ...] | str:
    """The policy of option value ``value`` under a strategy whose default is ``default_augment``: :data:`AUTO`
    (checked on the data) only where the strategy augments by default, else no augmentation."""
    policy = parse_policy(value)
    return () if policy == AUTO and not default_augment else policy


def describe(policy: Sequence[str]) -> str:
    """``"crop + flip"``, ``"crop"`` or ``"none"``."""
    return " + ".join(policy) if policy else "none"


def _crop(cfg: DataConfig, mode: Any) -> Any:
    return v2.RandomResizedCrop(cfg.image_size, scale=TRAIN_CROP_SCALE, ratio=(3 / 4, 4 / 3), interpolation=mode,
                                antialias=True)


def train_transform(cfg: DataConfig, policy: Sequence[str]) -> Callable[[Any], torch.Tensor]:
    """PIL → ``uint8 [3, H, W]`` with the augmentations of ``policy`` (the eval view when it is empty)."""
    if "crop" not in policy:
        base = eval_transform(cfg)
        return v2.Compose([base, v2.RandomHorizontalFlip()]) if "flip" in policy else base
    mode = _interpolation(cfg.interpolation)
    return _pipeline(_crop(cfg, mode), [v2.RandomHorizontalFlip()] if "flip" in policy else [], mode)


def on_decoded(policy: Sequence[str]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``uint8 [3, H, W]`` → the same with the augmentations of ``policy`` that need no re-decoding (``flip``);
    ``crop`` needs the original image (:func:`train_transform`)."""
    if "crop" in policy:
        raise ZooError("random crops need the original image: use train_transform, not on_decoded")
    return v2.RandomHorizontalFlip() if "flip" in policy else as_is


CHECKS: dict[str, tuple[str, str]] = {"crop": ("plain", "crop"), "flip": ("side", "side+flip")}
"""Per augmentation, ``(probe view, checked view)``: the probe is fit on the training images seen through the
first view, and its validation top-1 through the second is compared with the first. A horizontal flip is
checked with a *side* probe (the left half of each image, the right half blanked to the mean colour), because
ImageNet backbones are trained with flips: their pooled features barely tell a scene from its mirror image, so
a probe on whole images cannot see a label that depends on orientation (a left arrow from a right arrow).
What is on the left side tells it: a mirrored image's left half is its right half, mirrored."""


def check_view(cfg: DataConfig, name: str) -> Callable[[Any], torch.Tensor]:
    """PIL → ``uint8 [3, H, W]``: a view of :data:`CHECKS` (``plain``: the eval view; ``crop``: a random resized
    crop, seeded per image by :class:`SeededView`; ``side``: the left half, the right half blanked; ``side+flip``:
    the same of the mirrored image)."""
    if name == "plain":
        return eval_transform(cfg)
    if name == "crop":
        mode = _interpolation(cfg.interpolation)
        return _pipeline(_crop(cfg, mode), [], mode)
    if name in ("side", "side+flip"):
        steps = [eval_transform(cfg)] + ([v2.RandomHorizontalFlip(p=1.0)] if name == "side+flip" else [])
        return v2.Compose([*steps, _LeftHalf(cfg.mean)])
    raise ZooError(f"no check view {name!r}; known: {', '.join(sorted({v for pair in CHECKS.values() for v in pair}))}")


class _LeftHalf:
    """``uint8 [3, H, W]`` → the same with its right half set to the mean colour (zero once normalised)."""

    def __init__(self, mean: Sequence[float]) -> None:
        self.fill = torch.tensor([round(255 * m) for m in mean], dtype=torch.uint8).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        out = image.clone()
        out[..., image.shape[-1] // 2:] = self.fill
        return out


class SeededView(Dataset):
    """``dataset`` with a random ``transform`` whose randomness is seeded by ``(seed, index)``: the same
    item always gets the same crop, in any worker and any order, without touching the caller's RNG."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any], seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img, label = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + index)
            return self.transform(img), label


def as_is(image: torch.Tensor) -> torch.Tensor:
    """The identity transform: for datasets whose items are already ``uint8 [3, H, W]`` (a :class:`SeededView`)."""
    return image
