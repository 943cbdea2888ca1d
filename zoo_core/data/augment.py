"""Training augmentation as a policy: the named augmentations, their transforms, and the fixed views that
check each one against the data before fine-tuning.

The augmentations are ``crop`` (``RandomResizedCrop`` over :data:`TRAIN_CROP_SCALE` of the area,
aspect 3/4–4/3), ``mild-crop`` (the same over :data:`MILD_CROP_SCALE`: a small zoom and shift) and ``flip``
(horizontal, p = 0.5). A policy is a tuple of their names with at most one crop: ``()`` trains on the
evaluation view, ``("crop", "flip")`` (:data:`DEFAULT`) is the classic ImageNet-style recipe.

``--augment`` takes ``auto`` (the default: each default augmentation is kept only when it preserves the labels
of *this* data, a crop that does not falling back to ``mild-crop``; see :mod:`zoo_core.training.probe`),
``on`` / ``off``, or an explicit comma list (``crop``, ``mild-crop``, ``flip``, ``crop,flip``, ``none``).
:func:`parse_policy` turns any of these into a tuple.

:data:`CHECKS` says how each augmentation is checked and :func:`check_view` gives the deterministic views the
check extracts features of (one seeded random crop per image, drawn from the training distribution; the left
half of an image and of its mirror image), so the check is repeatable and its features can be cached.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..backbones.adapter import DataConfig
from ..errors import ZooError
from .transforms import eval_transform, interpolation, pipeline

AUGMENTATIONS: tuple[str, ...] = ("crop", "mild-crop", "flip")
"""The augmentations a policy may name, in the order they are applied."""

TRAIN_CROP_SCALE = (0.35, 1.0)
"""RandomResizedCrop area range of ``crop``. (0.08, 1) is the ImageNet-from-scratch recipe; transfer learning on
small user datasets (few epochs, objects usually large and centred) does better with milder crops that keep
most of the object in view."""

DEFAULT: tuple[str, ...] = ("crop", "flip")
"""What ``--augment`` alone (``on``) trains with, and what ``auto`` checks."""

MILD_CROP_SCALE = (0.8, 1.0)
"""RandomResizedCrop area range of ``mild-crop``: enough to shift and zoom a little, little enough to keep a
digit or a lesion whole."""

CROP_SCALES: dict[str, tuple[float, float]] = {"crop": TRAIN_CROP_SCALE, "mild-crop": MILD_CROP_SCALE}
"""Per crop augmentation, the share of the image's area a crop keeps."""

FALLBACK: dict[str, str] = {"crop": "mild-crop"}
"""``auto``: the augmentation checked in place of one the check dropped."""

AUTO = "auto"
"""The policy that keeps each default augmentation only when the check says it preserves labels."""

CHECK_TOLERANCE: dict[str, float] = {"flip": 0.02, "crop": 0.05, "mild-crop": 0.10}
"""Largest drop of the linear probe's validation top-1 (a fraction) on an augmentation's check view, against
the plain view, at which the augmentation is kept. A mirrored image is the same picture when labels do not
depend on orientation, so flipping must cost almost nothing; a crop loses part of the picture even when the
label survives (the probe was fit on whole images, never on crops), so it is allowed more, and the mild crop,
the fallback that keeps fine-tuning from training on the same pixels every epoch, most (the probe's drop
overstates what training on such crops costs)."""

VIEW_SEED = 0
"""Seed of the check views' random crops (fixed, so the views of a split are the same in every run and cache)."""

ARGUMENT_HELP = "auto, on, off, or a comma list of " + ", ".join(AUGMENTATIONS) + " (or none)"


def parse_policy(value: Any) -> tuple[str, ...] | str:
    """``value`` (None, a bool, ``"auto"``, ``"on"``/``"off"``, ``"crop,flip"``, a list) → :data:`AUTO` or a
    tuple of names in :data:`AUGMENTATIONS` order; anything else is a one-line :class:`ZooError`."""
    if value is None:
        return AUTO
    if isinstance(value, bool):
        return DEFAULT if value else ()
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if text in ("on", "true", "yes", "all", "default"):
            return DEFAULT
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
    if len([n for n in set(names) if n in CROP_SCALES]) > 1:
        raise ZooError(f"--augment: choose one of {', '.join(CROP_SCALES)}, not both")
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


def crop_of(policy: Sequence[str]) -> str | None:
    """The crop augmentation of ``policy`` (None without one): random crops need the original image."""
    return next((a for a in policy if a in CROP_SCALES), None)


def _crop(cfg: DataConfig, name: str, mode: Any) -> Any:
    return v2.RandomResizedCrop(cfg.image_size, scale=CROP_SCALES[name], ratio=(3 / 4, 4 / 3), interpolation=mode,
                                antialias=True)


def train_transform(cfg: DataConfig, policy: Any = True) -> Callable[[Any], torch.Tensor]:
    """PIL → ``uint8 [3, H, W]`` with the augmentations of ``policy`` (anything :func:`parse_policy` takes
    but ``auto``, which the check resolves first): ``True`` is :data:`DEFAULT`, ``False`` or ``()`` the eval
    view (:func:`~.transforms.eval_transform`).

    Randomness comes from torch's RNG (seeded per worker by :func:`~.loaders.make_loader`; seed the main
    process yourself when ``num_workers=0``).
    """
    policy = parse_policy(policy)
    if policy == AUTO:
        raise ZooError("train_transform: resolve augment='auto' first (zoo_core.training.probe checks it)")
    crop = crop_of(policy)
    if crop is None:
        base = eval_transform(cfg)
        return v2.Compose([base, v2.RandomHorizontalFlip()]) if "flip" in policy else base
    mode = interpolation(cfg.interpolation)
    return pipeline(_crop(cfg, crop, mode), [v2.RandomHorizontalFlip()] if "flip" in policy else [], mode)


def on_decoded(policy: Sequence[str]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``uint8 [3, H, W]`` → the same with the augmentations of ``policy`` that need no re-decoding (``flip``);
    crops need the original image (:func:`train_transform`)."""
    if crop_of(policy) is not None:
        raise ZooError("random crops need the original image: use train_transform, not on_decoded")
    return v2.RandomHorizontalFlip() if "flip" in policy else as_is


CHECKS: dict[str, tuple[str, str]] = {"crop": ("plain", "crop"), "mild-crop": ("plain", "mild-crop"),
                                      "flip": ("side", "side+flip")}
"""Per augmentation, ``(probe view, checked view)``: the probe is fit on the training images seen through the
first view, and its validation top-1 through the second is compared with the first. A horizontal flip is
checked with a *side* probe (the left half of each image, the right half blanked to the mean colour), because
ImageNet backbones are trained with flips: their pooled features barely tell a scene from its mirror image, so
a probe on whole images cannot see a label that depends on orientation (a left arrow from a right arrow).
What is on the left side tells it: a mirrored image's left half is its right half, mirrored."""


def check_view(cfg: DataConfig, name: str) -> Callable[[Any], torch.Tensor]:
    """PIL → ``uint8 [3, H, W]``: a view of :data:`CHECKS` (``plain``: the eval view; ``crop``, ``mild-crop``: a
    random resized crop, seeded per image by :class:`SeededView`; ``side``: the left half, the right half
    blanked; ``side+flip``: the same of the mirrored image)."""
    if name == "plain":
        return eval_transform(cfg)
    if name in CROP_SCALES:
        mode = interpolation(cfg.interpolation)
        return pipeline(_crop(cfg, name, mode), [], mode)
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
