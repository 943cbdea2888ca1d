"""Shared helpers to find a model's head, split it into stages, and freeze all but the top.

Every built-in plugin freezes through these functions, so "frozen" means the same thing for every
family: ``requires_grad=False`` on the parameters *and* the leaf modules of a frozen stage locked
in eval mode, so BatchNorm statistics and dropout masks do not change under ``model.train()``.
"""

from __future__ import annotations

import re
import types
from typing import Iterable, Sequence

from torch import nn

from ..util import under

Stages = list[tuple[str, list[str]]]
"""Ordered input→output list of ``(stage name, names)``; names are parameter, buffer and leaf
module names (dotted, as in ``named_parameters``) that belong to that stage."""

_LOCK_ATTR = "_zoo_eval_locked"


def find_head(model: nn.Module) -> str:
    """Return the dotted name of the final classifier ``nn.Linear`` of ``model``.

    Tries timm's ``get_classifier()``, then the attributes ``fc``, ``classifier``, ``head``, then the
    last ``nn.Linear`` in module order.
    """
    by_id = {id(m): n for n, m in model.named_modules()}
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        clf = get_classifier()
        if isinstance(clf, nn.Module) and id(clf) in by_id and by_id[id(clf)]:
            return by_id[id(clf)]
    for attr in ("fc", "classifier", "head"):
        mod = getattr(model, attr, None)
        if isinstance(mod, nn.Linear):
            return attr
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear head; override head_name() in its adapter"
        )
    return linears[-1]


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` by ``module``."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def replace_linear_head(model: nn.Module, head_name: str, num_classes: int) -> nn.Module:
    """Put a fresh ``nn.Linear(in_features, num_classes)`` at ``head_name`` and return ``model``."""
    old = model.get_submodule(head_name)
    in_features = getattr(old, "in_features", None)
    if in_features is None:
        raise ValueError(f"head {head_name!r} is a {type(old).__name__}, not an nn.Linear")
    device = old.weight.device if isinstance(getattr(old, "weight", None), nn.Parameter) else None
    new = nn.Linear(in_features, num_classes, device=device if device and device.type != "meta" else None)
    set_submodule(model, head_name, new)
    return model


def member_names(model: nn.Module) -> list[str]:
    """Every parameter, buffer and leaf-module name of ``model``, once each, in module order: the names a
    stage is made of (see :data:`Stages`)."""
    names = [n for n, _ in model.named_parameters()]
    names += [n for n, _ in model.named_buffers()]
    names += [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    return list(dict.fromkeys(names))


class StageError(ValueError):
    """A model's stages leave a parameter or buffer out (the message names them and the fix)."""


def _stateful_names(model: nn.Module) -> set[str]:
    """Parameter and buffer names, and the names of modules that hold parameters themselves."""
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return names | {n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}


def stages_from_patterns(
    model: nn.Module, patterns: Sequence[tuple[str, str]], head: str, *, unmatched: str | None = None
) -> Stages:
    """Assign every parameter, buffer and leaf module (outside the head) to a stage.

    ``patterns`` is an ordered input→output list of ``(stage name, regex)``; a name joins the first
    stage whose regex matches it (``re.match``). A parameter or buffer no pattern matches raises
    :class:`StageError` naming it, unless ``unmatched`` names the stage it should join (an explicit
    choice, e.g. ``unmatched="stem"`` for a class token; unmatched stateless leaves join it too).
    Without ``unmatched``, stateless leaves (ReLU, pooling) that no pattern matches need no stage, and
    are locked in eval with their parent when it is frozen whole; empty stages are dropped.
    """
    compiled = [(stage, re.compile(rx)) for stage, rx in patterns]
    out: dict[str, list[str]] = {stage: [] for stage, _ in patterns}
    if unmatched is not None and unmatched not in out:
        raise ValueError(f"unmatched={unmatched!r} is not one of the stages {list(out)}")
    left: list[str] = []
    stateful = _stateful_names(model)
    for name in member_names(model):
        if under(name, head):
            continue
        for stage, rx in compiled:
            if rx.match(name):
                out[stage].append(name)
                break
        else:
            if name in stateful:
                left.append(name)
            elif unmatched is not None:
                out[unmatched].append(name)  # a stateless leaf (dropout) follows its stage's mode
    if left and unmatched is None:
        shown = ", ".join(left[:6]) + (f" … (+{len(left) - 6} more)" if len(left) > 6 else "")
        raise StageError(
            f"{type(model).__name__}: {len(left)} parameter(s)/buffer(s) match no stage pattern: {shown}; add them "
            "to a stage in stage_patterns() (a class token or position embedding goes with the embedding stem, "
            "a final norm with the last block) or pass unmatched='<stage>' to stages_from_patterns — for a "
            "transformer, override stages() with block_stages(model, '<blocks>', head)"
        )
    if left:
        out[unmatched] += left  # type: ignore[index]
    return [(s, n) for s, n in out.items() if n]


def default_stages(model: nn.Module, head: str) -> Stages:
    """One stage per top-level child holding parameters (the head itself excluded): right for a plain
    sequential CNN (stem, layer1 … layer4). Buffers of the model itself (constants no step changes) join
    the first stage; parameters of its own (a class token) raise :class:`StageError`. Transformers need
    :func:`block_stages`."""
    patterns = [
        (n, rf"^{re.escape(n)}(\.|$)")
        for n, m in model.named_children()
        if any(True for _ in m.parameters()) and n != head
    ]
    own_buffers = [re.escape(n) for n, _ in model.named_buffers(recurse=False)]
    if patterns and own_buffers:
        first, rx = patterns[0]
        patterns[0] = (first, rf"{rx}|^({'|'.join(own_buffers)})$")
    return stages_from_patterns(model, patterns, head)


def block_stages(model: nn.Module, blocks: str, head: str, *, per_stage: int = 1, stem: str = "stem") -> Stages:
    """Transformer stages in the shape of timm's ``group_matcher``: the embedding stem, one stage per
    block (or per ``per_stage`` blocks), and what comes after the last block (the final norm) with it.

    :param blocks: dotted name of the ``nn.Sequential``/``nn.ModuleList`` of blocks (``"encoder.layers"``
        for torchvision's ViT, ``"blocks"`` for timm's, ``"features"`` for torchvision's Swin, whose
        stages and patch mergings then become one stage each).
    :param head: the head's dotted name (never in a stage).
    Everything that holds state and is not in the blocks or the head joins the stem when it runs (is
    registered) before the blocks, else the last stage. Stage names are ``stem`` and ``<blocks>.<i>``.
    """
    container = model.get_submodule(blocks)
    children = [n for n, m in container.named_children() if any(True for _ in m.parameters())]
    if not children:
        raise StageError(f"{type(model).__name__}.{blocks} holds no blocks with parameters")
    groups = [children[i:i + per_stage] for i in range(0, len(children), per_stage)]
    names = [f"{blocks}.{g[0]}" if len(g) == 1 else f"{blocks}.{g[0]}-{g[-1]}" for g in groups]
    patterns = [(stage, rf"^{re.escape(blocks)}\.({'|'.join(map(re.escape, g))})(\.|$)")
                for stage, g in zip(names, groups)]
    stages = stages_from_patterns(model, patterns, head, unmatched=names[-1])
    before = {n for n in stages[-1][1] if not under(n, blocks) and _runs_before(model, n, blocks)}
    if before:
        stages = [(stem, [n for n in stages[-1][1] if n in before])] + [
            (s, [n for n in m if n not in before]) for s, m in stages]
    return stages


def _runs_before(model: nn.Module, name: str, blocks: str) -> bool:
    """Whether ``name`` sits before the ``blocks`` container: a parameter held directly by one of its
    ancestors (a class token, a position embedding), or a module registered before it."""
    parts, bparts = name.split("."), blocks.split(".")
    i = 0
    while i < min(len(parts), len(bparts)) and parts[i] == bparts[i]:
        i += 1
    parent = model.get_submodule(".".join(bparts[:i]))
    children = [n for n, _ in parent.named_children()]
    if parts[i] not in children:
        return True
    return children.index(parts[i]) < children.index(bparts[i])


NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
"""Module types that count as normalisation layers (a stage of these only is a final norm on its own)."""


def is_norm_only(model: nn.Module, members: Iterable[str]) -> bool:
    """True when the parameters among ``members`` all belong to normalisation layers (:data:`NORM_LAYERS`)."""
    modules = dict(model.named_modules())
    params = {n for n, _ in model.named_parameters()}
    owners = {m.rpartition(".")[0] for m in members if m in params}
    return bool(owners) and all(isinstance(modules.get(o), NORM_LAYERS) for o in owners)


def join_trailing_norm(model: nn.Module, stages: Stages) -> Stages:
    """``stages`` with a last stage of normalisation layers only (a final norm) joined to the stage before it,
    so ``trainable_stages=1`` trains the last block and its norm rather than the norm alone."""
    if len(stages) < 2 or not is_norm_only(model, stages[-1][1]):
        return list(stages)
    (name, members), (_, norm) = stages[-2], stages[-1]
    return [*stages[:-2], (name, [*members, *norm])]


def _frozen_train(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def lock_eval(module: nn.Module) -> None:
    """Keep ``module`` in eval mode even when ``train()`` is called on it or a parent."""
    module.train = types.MethodType(_frozen_train, module)  # type: ignore[method-assign]
    setattr(module, _LOCK_ATTR, True)
    nn.Module.train(module, False)


def unlock_eval(module: nn.Module) -> None:
    """Undo :func:`lock_eval`; the module follows its parent's mode again."""
    if getattr(module, _LOCK_ATTR, False):
        del module.train
        delattr(module, _LOCK_ATTR)


def is_eval_locked(module: nn.Module) -> bool:
    """True when :func:`lock_eval` pinned ``module`` to eval mode."""
    return bool(getattr(module, _LOCK_ATTR, False))


def freeze_stages(
    model: nn.Module, stages: Stages, head: str, trainable_stages: int = 0
) -> nn.Module:
    """Leave the head and the last ``trainable_stages`` stages trainable; freeze the rest.

    Frozen parameters get ``requires_grad=False`` and frozen leaf modules (BatchNorm, Dropout, …), as
    well as any module whose whole state is frozen, are locked in eval mode; anything trainable is unlocked. A negative ``trainable_stages`` or one at
    least ``len(stages)`` unfreezes everything. Returns ``model``.
    """
    n = len(stages)
    k = n if trainable_stages < 0 else min(trainable_stages, n)
    return freeze_all_but(model, stages, head, range(n - k, n))


def freeze_all_but(model: nn.Module, stages: Stages, head: str, keep: Iterable[int]) -> nn.Module:
    """Leave the head and the stages whose indices are in ``keep`` trainable (any of them, e.g. only the
    first: surgical fine-tuning); freeze and eval-lock the rest as :func:`freeze_stages` does."""
    keep = set(keep)
    frozen: set[str] = set()
    for i, (_, names) in enumerate(stages):
        if i not in keep:
            frozen.update(names)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen or under(name, head))
    whole = _fully_frozen_modules(model, frozen)
    whole |= {n for n, m in model.named_modules()  # stateless leaves (Dropout) of a frozen module
              if n and n.rpartition(".")[0] in whole and not any(True for _ in m.children())}
    for name, m in model.named_modules():
        if (name in frozen or name in whole) and not under(name, head):
            lock_eval(m)
        else:
            unlock_eval(m)
    return model


def _fully_frozen_modules(model: nn.Module, frozen: set[str]) -> set[str]:
    """Modules holding state whose every parameter and buffer (recursively) is in ``frozen``.

    These are locked too, so a non-leaf normalisation layer (timm's ``BatchNormAct2d`` has ``act`` and
    ``drop`` children) cannot update its running statistics when its stage is frozen.
    """
    state: dict[str, tuple[bool, bool]] = {}  # module name → (holds state, all of it frozen)
    for name, m in reversed(list(model.named_modules())):  # children before their parents
        own = [f"{name}.{n}" if name else n for n, _ in m.named_parameters(recurse=False)]
        own += [f"{name}.{n}" if name else n for n, _ in m.named_buffers(recurse=False)]
        kids = [state.get(f"{name}.{c}" if name else c, (False, True)) for c, _ in m.named_children()]
        state[name] = (
            bool(own) or any(has for has, _ in kids),
            all(o in frozen for o in own) and all(done for _, done in kids),
        )
    return {name for name, (has, done) in state.items() if has and done}


def unfreeze_all(model: nn.Module) -> nn.Module:
    """Make every parameter trainable and unlock every eval-locked module."""
    for p in model.parameters():
        p.requires_grad_(True)
    for m in model.modules():
        unlock_eval(m)
    return model


def lock_norm_statistics(model: nn.Module) -> nn.Module:
    """Lock every BatchNorm of ``model`` in eval mode: its running statistics stay, its affine parameters
    still train when they require grad (Keras' advice for fine-tuning). Undone by :func:`unfreeze_all`."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            lock_eval(m)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Return ``(total, trainable)`` parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def stage_index(stages: Stages) -> dict[str, int]:
    """Map each member name to the index of its stage."""
    return {name: i for i, (_, names) in enumerate(stages) for name in names}


def parameter_names(model: nn.Module, names: Iterable[str]) -> list[str]:
    """Filter ``names`` down to the parameter names of ``model``."""
    params = {n for n, _ in model.named_parameters()}
    return [n for n in names if n in params]
