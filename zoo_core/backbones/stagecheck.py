"""The conformance kit's checks of a model's stages and head (used by :mod:`zoo_core.backbones.conformance`).

Each check raises the kit's ``AssertionError`` (through ``check.fail``) naming what is wrong and the fix:
a parameter or buffer in no stage or in two, a stage of normalisation layers only (a final norm on its
own), stages out of forward order (seen through forward pre-hooks), a head that is not the module that
produces the logits, and parameter-free modules of a frozen stage left in training mode.
:func:`default_stages_warning` says when a family relies on the default stages while its model is not a
plain sequential CNN.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from ..util import few, under
from .adapter import BackboneAdapter
from .freezing import Stages, is_norm_only

if TYPE_CHECKING:
    from .conformance import _Check

_FIX = ("list them in stage_patterns() or stages() — for a transformer, override stages() with "
        "zoo_core.plugin_kit.block_stages(model, '<blocks>', head) (stem, one stage per block, final norm "
        "with the last block)")


def _owner(name: str) -> str:
    return name.rpartition(".")[0]


def check_partition(check: _Check, model: nn.Module, head_name: str) -> Stages:
    """``stages(model)`` puts every non-head parameter and buffer in exactly one named, non-empty stage."""
    stages = check.call("stages(model)", check.adapter.stages, model)
    step = "stages(model)"
    if not isinstance(stages, (list, tuple)) or not stages:
        raise check.fail(step, f"returned {stages!r}; expected a non-empty list of (stage name, member names)")
    known = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    known |= {n for n, _ in model.named_modules() if n}
    seen: dict[str, str] = {}
    out: Stages = []
    for item in stages:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
            raise check.fail(step, f"item {item!r} is not a (stage name, member names) pair")
        stage, members = item[0], list(item[1])
        if any(stage == s for s, _ in out):
            raise check.fail(step, f"stage name {stage!r} appears twice")
        if not members:
            raise check.fail(step, f"stage {stage!r} is empty")
        unknown = [m for m in members if m not in known]
        if unknown:
            raise check.fail(step, f"stage {stage!r} names things the model does not have: {few(unknown, 6, sort=True)}")
        in_head = [m for m in members if under(m, head_name)]
        if in_head:
            raise check.fail(step, f"stage {stage!r} contains head members {few(in_head, 6, sort=True)} (head is {head_name!r})")
        for m in members:
            if m in seen:
                raise check.fail(step, f"{m!r} is in both stage {seen[m]!r} and stage {stage!r}: each parameter "
                                 "and buffer belongs to exactly one stage")
            seen[m] = stage
        out.append((stage, members))
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        orphans = [n for n, _ in named if n not in seen and not under(n, head_name)]
        if orphans:
            raise check.fail(step, f"{len(orphans)} non-head {kind}(s) belong to no stage: "
                             f"{few(orphans, 6, sort=True)}; {_FIX}")
    return out


def check_no_norm_only_stage(check: _Check, model: nn.Module, stages: Stages) -> None:
    """No stage holds normalisation layers only: ``freeze(model, 1)`` would then train just a final norm."""
    for stage, members in stages:
        if is_norm_only(model, members):
            params = {n for n, _ in model.named_parameters()}
            owners = sorted({_owner(m) for m in members if m in params})
            raise check.fail("stages(model)", f"stage {stage!r} holds only normalisation layers "
                             f"({few(owners, 4)}): --trainable-stages 1 would train just that norm; put a final "
                             "norm in the last block's stage (block_stages and join_trailing_norm do this)")


def check_forward_order(check: _Check, model: nn.Module, x: torch.Tensor, stages: Stages) -> None:
    """Stages are listed input → output: each stage's first module runs (forward pre-hook) after the
    previous stage's first module."""
    modules = dict(model.named_modules())
    members = {m for _, ms in stages for m in ms}
    owners = {_owner(m) if m not in modules else m for m in members} - {""}
    order: dict[str, int] = {}

    def seen(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: object) -> None:
            order.setdefault(name, len(order))
        return hook

    handles = [modules[o].register_forward_pre_hook(seen(o)) for o in owners if o in modules]
    model.eval()
    try:
        with torch.no_grad():
            check.call("forward order (model(x))", model, x)
    finally:
        for h in handles:
            h.remove()
    first = []
    for stage, ms in stages:
        runs = [(order[o], o) for o in {_owner(m) if m not in modules else m for m in ms} if o in order]
        if runs:
            first.append((min(runs)[0], stage, min(runs)[1]))
    for (i, a, ma), (j, b, mb) in zip(first, first[1:]):
        if j < i:
            raise check.fail("stages(model)", f"stages are not in forward order: stage {b!r} (its {mb!r} runs "
                             f"#{j}) comes after stage {a!r} (its {ma!r} runs #{i}) in the list but runs before "
                             "it; list stages input → output (the last stage is the one next to the head)")


def check_head_output(check: _Check, model: nn.Module, x: torch.Tensor, head_name: str) -> None:
    """The module ``head_name(model)`` names produces the logits itself, not a container around it."""
    step = "head_name(model)"
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    inner = [n for n, m in modules.items() if under(n, head_name) and n != head_name
             and any(True for _ in m.parameters(recurse=False))]
    handles = [modules[n].register_forward_hook(lambda _m, _a, out, n=n: seen.__setitem__(n, out))
               for n in [head_name, *inner]]
    model.eval()
    try:
        with torch.no_grad():
            logits = check.call("head check (model(x))", model, x)
    finally:
        for h in handles:
            h.remove()
    out = seen.get(head_name)
    if not isinstance(out, torch.Tensor) or out.shape != logits.shape or not torch.equal(out, logits):
        raise check.fail(step, f"{head_name!r} does not produce the model's logits (its output is not model(x)); "
                         "name the final classifier layer, the module whose output is the logits")
    producers = [n for n in inner if isinstance(seen.get(n), torch.Tensor) and seen[n].shape == logits.shape
                 and torch.equal(seen[n], logits)]
    if producers:
        raise check.fail(step, f"{head_name!r} is a container; the logits come from {producers[-1]!r} inside it: "
                         f"return {producers[-1]!r} from head_name() so replace_head and freezing act on the classifier")


def check_frozen_modes(check: _Check, model: nn.Module, frozen_members: set[str], k: int) -> None:
    """After ``freeze(model, k)`` and ``model.train()``, modules of frozen stages (Dropout included) are in eval."""
    modules = dict(model.named_modules())
    frozen_params = {n for n, p in model.named_parameters() if not p.requires_grad}
    whole = {n for n, m in modules.items() if n and any(True for _ in m.parameters())
             and all(f"{n}.{p}" in frozen_params for p, _ in m.named_parameters())}
    leaves = {n for n, m in modules.items() if n and not any(True for _ in m.children())}
    frozen = {m for m in frozen_members if m in modules} | {n for n in leaves if _owner(n) in whole}
    training = sorted(n for n in frozen if modules[n].training)
    if training:
        raise check.fail(f"train step after freeze(model, {k})", f"module(s) of frozen stages stayed in training "
                         f"mode under model.train(): {few(training, 6)}; a frozen Dropout still drops — lock them "
                         "with zoo_core.plugin_kit.lock_eval (freeze_stages does this for every stage member)")


def default_stages_warning(adapter: BackboneAdapter, model: nn.Module) -> str | None:
    """Why the default stages (one per top-level child) are suspect for this model, or ``None``: the
    adapter overrides neither ``stages`` nor ``stage_patterns`` and the model is not a plain sequential CNN."""
    cls = type(adapter)
    if cls.stages is not BackboneAdapter.stages or cls.stage_patterns is not BackboneAdapter.stage_patterns:
        return None
    reasons = []
    if any(True for _ in model.parameters(recurse=False)):
        reasons.append("parameters of its own (a class token?)")
    kinds = {type(m).__name__ for m in model.modules() if isinstance(m, (nn.LayerNorm, nn.MultiheadAttention))}
    if kinds:
        reasons.append(f"{', '.join(sorted(kinds))} layers")
    if not reasons:
        return None
    msg = (f"{cls.__name__} relies on the default stages (one per top-level child) but {type(model).__name__} is "
           f"not a plain sequential CNN ({'; '.join(reasons)}); check what --trainable-stages trains: {_FIX}")
    warnings.warn(msg, UserWarning, stacklevel=3)
    return msg
