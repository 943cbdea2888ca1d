"""The frozen prefix of a surgical trial from one cached forward.

A trial that trains stages ``L…`` (and the head) never changes stages ``0…L-1``: they are frozen and locked in
eval mode, so their output for the trial's fixed, unaugmented images is the same in every epoch and every
trial with the same lowest trainable stage. :func:`build` runs the model once over the images, stopping at
the deepest boundary asked for, and keeps the input of each boundary module — the shallowest module holding
stage ``L``'s first member and nothing of a lower stage. :meth:`PrefixCache.skipping` then runs the model with
the frozen top-level modules of the prefix answering zeros of their recorded shape (no convolutions, no
autograd) and the boundary module fed the cached rows.

A boundary is kept only when that short cut gives the same logits as the whole forward on a few images
(models whose later stages read an earlier activation a second time, or a non-tensor output, fall back to
the whole forward), and only while the cache stays under :data:`MAX_BYTES`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..backbones.freezing import Stages, member_names
from ..util import under

MAX_BYTES = 1 << 30
"""The most memory the cached boundary inputs of one trial set may take."""

CHECK_ROWS = 4  # images on which the short cut must reproduce the whole forward


class _Stop(Exception):
    """Raised by the last boundary's hook: the rest of the forward is not needed."""


@dataclass
class Boundary:
    """Where stage ``lowest`` starts: the module whose input is cached, and the frozen modules it skips."""

    lowest: int
    module: str
    skipped: list[str]
    shapes: dict[str, tuple[torch.Size, torch.dtype]] = field(default_factory=dict)  # per-image output shapes
    rows: list[torch.Tensor] = field(default_factory=list)  # boundary inputs while recording
    cached: torch.Tensor | None = None  # the boundary inputs of every image, in ``parts`` order


def _owner(stages: Stages) -> dict[str, int]:
    return {n: i for i, (_, names) in enumerate(stages) for n in names}


def boundary(model: nn.Module, stages: Stages, lowest: int) -> Boundary | None:
    """The boundary of stage ``lowest`` (None when the model has no module that starts it cleanly)."""
    owner = _owner(stages)
    leaves = {n for n, m in model.named_modules() if n and not any(True for _ in m.children())}
    first = next((n for n in stages[lowest][1] if n in leaves), None)
    if first is None or lowest == 0:
        return None
    members = member_names(model)
    parts = first.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        if all(owner.get(m, lowest) >= lowest for m in members if under(m, name)):
            break
    else:
        return None
    skipped: list[str] = []
    for n, _ in model.named_modules():
        if not n or any(under(n, s) for s in skipped):
            continue
        inside = [m for m in members if under(m, n) and m in owner]
        if inside and all(owner[m] < lowest for m in inside):
            skipped.append(n)
    return Boundary(lowest, name, skipped)


def _record(b: Boundary, model: nn.Module, stop: bool) -> list[Any]:
    """Hooks that record the skipped modules' output shapes and the boundary's input (then stop, if last)."""
    def shape_of(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _a: Any, out: Any) -> None:
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"{name} returns {type(out).__name__}")
            b.shapes[name] = (out.shape[1:], out.dtype)
        return hook

    def grab(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
            raise TypeError(f"{b.module} takes more than one tensor")
        b.rows.append(args[0].detach())
        if stop:
            raise _Stop
    hooks = [model.get_submodule(n).register_forward_hook(shape_of(n)) for n in b.skipped]
    return hooks + [model.get_submodule(b.module).register_forward_pre_hook(grab, with_kwargs=True)]


class PrefixCache:
    """The cached boundary inputs of a trial set's images, one entry per lowest trainable stage."""

    def __init__(self, boundaries: dict[int, Boundary], sizes: dict[str, int]) -> None:
        self.boundaries = boundaries
        self.sizes = sizes  # images per part, in the order they were run ("train", "val")
        self._rows: torch.Tensor | None = None

    def has(self, lowest: int) -> bool:
        """True when trials whose lowest trainable stage is ``lowest`` can skip the prefix."""
        return lowest in self.boundaries

    def rows(self, lowest: int, part: str) -> torch.Tensor:
        """The cached boundary inputs of ``part``'s images."""
        start = 0
        for name, n in self.sizes.items():
            if name == part:
                return self.boundaries[lowest].cached[start:start + n]  # type: ignore[index]
            start += n
        raise KeyError(part)

    def select(self, rows: torch.Tensor) -> None:
        """The rows the next forward under :meth:`skipping` reads."""
        self._rows = rows

    @contextlib.contextmanager
    def skipping(self, model: nn.Module, lowest: int) -> Iterator[None]:
        """Run ``model`` with stages below ``lowest`` answered from the cache (rows from :meth:`select`)."""
        b = self.boundaries[lowest]
        saved = {n: vars(model.get_submodule(n)).get("forward") for n in b.skipped}  # instance-level only

        def zeros(name: str) -> Callable[..., torch.Tensor]:
            shape, dtype = b.shapes[name]

            def forward(*_a: Any, **_k: Any) -> torch.Tensor:
                rows = self._rows
                return torch.zeros((len(rows), *shape), dtype=dtype, device=rows.device)
            return forward

        def feed(_m: nn.Module, _args: tuple[Any, ...]) -> tuple[torch.Tensor]:
            return (self._rows,)
        for n in b.skipped:
            model.get_submodule(n).forward = zeros(n)  # type: ignore[method-assign]
        hook = model.get_submodule(b.module).register_forward_pre_hook(feed)
        try:
            yield
        finally:
            hook.remove()
            for n, f in saved.items():
                if f is None:
                    del model.get_submodule(n).forward  # back to the class's method
                else:
                    model.get_submodule(n).forward = f  # type: ignore[method-assign]


def build(model: nn.Module, stages: Stages, lowest: list[int], parts: dict[str, torch.Tensor],
          prepare: Callable[[torch.Tensor], torch.Tensor], amp: Callable[[], Any], batch: int) -> PrefixCache:
    """One eval-mode forward of ``parts`` (uint8 images by name) up to the deepest boundary of ``lowest``;
    the boundaries whose short cut reproduces the whole forward."""
    found = {i: b for i in sorted(set(lowest)) if (b := boundary(model, stages, i)) is not None}
    if not found:
        return PrefixCache({}, {k: len(v) for k, v in parts.items()})
    images = torch.cat(list(parts.values()))
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), amp():
            for i in range(0, len(images), batch):
                hooks = [h for j, b in enumerate(found.values()) for h in _record(b, model, j == len(found) - 1)]
                try:
                    model(prepare(images[i:i + batch]))
                except _Stop:
                    pass
                except TypeError:
                    return PrefixCache({}, {k: len(v) for k, v in parts.items()})
                finally:
                    for h in hooks:
                        h.remove()
        cache = PrefixCache(found, {k: len(v) for k, v in parts.items()})
        total = 0
        for i, b in list(found.items()):
            b.cached, b.rows = torch.cat(b.rows), []
            total += b.cached.numel() * b.cached.element_size()
            if (total > MAX_BYTES or set(b.skipped) - set(b.shapes)
                    or not _reproduces(cache, model, i, images[:CHECK_ROWS], prepare, amp)):
                del found[i]
        return cache
    finally:
        model.train(was)


def _reproduces(cache: PrefixCache, model: nn.Module, lowest: int, images: torch.Tensor,
                prepare: Callable[[torch.Tensor], torch.Tensor], amp: Callable[[], Any]) -> bool:
    """True when the short cut's logits equal the whole forward's on ``images`` (the first cached rows)."""
    with torch.no_grad(), amp():
        whole = model(prepare(images)).float()
        cache.select(cache.boundaries[lowest].cached[:len(images)])
        try:
            with cache.skipping(model, lowest):
                short = model(prepare(images)).float()
        except (RuntimeError, TypeError):
            return False
    return bool(torch.allclose(whole, short, rtol=1e-3, atol=1e-4 * (1 + float(whole.abs().max()))))
