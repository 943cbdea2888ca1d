"""Conformance kit for adapter authors (public path :mod:`zoo_core.testing`): one call checks an adapter end to end.

```python
from zoo_core.testing import check_adapter

def test_my_adapter():
    check_adapter(MyAdapter(), "my_net")   # or check_adapter("my_net") once the plugin is installed
```

:func:`check_adapter` raises ``AssertionError`` with a message naming the step and the parameters,
buffers or shapes at fault. It builds random-init models only (never downloads) on a tiny batch, so
it takes about a second for a small model.
"""

from __future__ import annotations

import fnmatch
import io
from typing import Any

import pluggy
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from ..util import few, under
from . import stagecheck
from .adapter import BackboneAdapter, DataConfig
from .manager import new_plugin_manager, register_checked, short_error
from .registry import get_adapter

__all__ = ["adapter_names_for_tests", "check_adapter", "check_plugin"]


class _Check:
    """The state of one :func:`check_adapter` run; ``fail`` prefixes every message."""

    def __init__(self, adapter: BackboneAdapter, name: str, batch_size: int) -> None:
        self.adapter = adapter
        self.name = name
        self.batch_size = batch_size
        self.label = f"{type(adapter).__name__} / {name!r}"

    def fail(self, step: str, msg: str) -> AssertionError:
        return AssertionError(f"check_adapter({self.label}) {step}: {msg}")

    def call(self, step: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn``; turn any exception into an AssertionError naming the step."""
        try:
            return fn(*args, **kwargs)
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as a conformance failure
            raise self.fail(step, f"raised {type(exc).__name__}: {exc}") from exc

    def module(self, step: str, obj: object, hint: str) -> nn.Module:
        if not isinstance(obj, nn.Module):
            raise self.fail(step, f"returned {type(obj).__name__}, expected an nn.Module ({hint})")
        return obj

    def logits(self, step: str, model: nn.Module, x: torch.Tensor, num_classes: int) -> torch.Tensor:
        out = self.call(step, model, x)
        if isinstance(out, tuple):
            mode = "train" if model.training else "eval"
            raise self.fail(step, f"model(x) in {mode} mode returned a {type(out).__name__} of {len(out)}, expected "
                            f"one tensor of logits [N, {num_classes}]: the trainer has no auxiliary loss; drop the "
                            "auxiliary head in create() (CONTRIBUTING.md, 'Models with auxiliary outputs')")
        if not isinstance(out, torch.Tensor):
            raise self.fail(step, f"model(x) returned {type(out).__name__}, expected a tensor of logits")
        want = (x.shape[0], num_classes)
        if tuple(out.shape) != want:
            raise self.fail(step, f"model(x) has shape {tuple(out.shape)}, expected {want}")
        return out

    def head(self, model: nn.Module) -> tuple[str, nn.Module, set[str]]:
        head_name = self.call("head_name(model)", self.adapter.head_name, model)
        try:
            head = model.get_submodule(head_name)
        except AttributeError as exc:
            raise self.fail("head_name(model)", f"{head_name!r} is not a submodule of the model") from exc
        params = {n for n, _ in model.named_parameters() if under(n, head_name)}
        if not params:
            raise self.fail("head_name(model)", f"head {head_name!r} has no parameters")
        return head_name, head, params

    def expect_trainable(self, step: str, model: nn.Module, expected: set[str]) -> None:
        got = {n for n, p in model.named_parameters() if p.requires_grad}
        extra, missing = got - expected, expected - got
        if extra:
            raise self.fail(step, f"left {len(extra)} parameter(s) trainable that should be frozen: {few(extra, 6, sort=True)}")
        if missing:
            raise self.fail(step, f"froze {len(missing)} parameter(s) that should train: {few(missing, 6, sort=True)}")


def _input_for(check: _Check, step: str, model: nn.Module, image_size: int, num_classes: int) -> torch.Tensor:
    """A random batch at ``image_size``, or at the data config's size if the model needs a fixed one."""
    x = torch.randn(check.batch_size, 3, image_size, image_size)
    model.eval()
    with torch.no_grad():
        try:
            model(x)
        except Exception as exc:  # noqa: BLE001 - e.g. a ViT with a fixed input size
            dc = check.call("data_config(name, None)", check.adapter.data_config, check.name, None)
            if not isinstance(dc, DataConfig):
                raise check.fail("data_config(name, None)", f"returned {type(dc).__name__}, expected DataConfig") from None
            x = torch.randn(check.batch_size, *dc.input_size)
            try:
                model(x)
            except Exception as exc2:  # noqa: BLE001
                raise check.fail(
                    step, f"model(x) raised at {image_size}px ({type(exc).__name__}: {exc}) and at the "
                    f"data config's input size {dc.input_size} ({type(exc2).__name__}: {exc2})"
                ) from exc2
        check.logits(step, model, x, num_classes)
    return x


def _check_replace_head(check: _Check, model: nn.Module, x: torch.Tensor, n: int) -> nn.Module:
    """``replace_head(model, n)`` works in place, gives ``n`` logits, and swaps the module ``head_name`` names."""
    step = f"replace_head(model, {n})"
    head_name = check.call("head_name(model)", check.adapter.head_name, model)
    hint = (f" (head_name(model) is {head_name!r}: it must name the final classifier layer, the one whose "
            "outputs are the logits — override head_name() if the default guess is wrong)")
    try:
        returned = check.call(step, check.adapter.replace_head, model, n)
    except AssertionError as exc:
        raise AssertionError(f"{exc}{hint}") from exc.__cause__
    if check.module(step, returned, "return the model") is not model:
        raise check.fail(step, f"returned a different {type(returned).__name__} object instead of the model it "
                         "was given: replace_head must change the model in place and return it")
    model.eval()
    with torch.no_grad():
        try:
            check.logits(step, model, x, n)
        except AssertionError as exc:
            raise AssertionError(f"{exc}{hint}") from exc.__cause__
    head_now = check.call("head_name(model)", check.adapter.head_name, model)
    out = getattr(dict(model.named_modules()).get(head_now) if isinstance(head_now, str) else None, "out_features", n)
    if out != n:
        raise check.fail(step, f"the logits have {n} outputs, but the head module has out_features={out}"
                         + hint.replace(repr(head_name), repr(head_now)))
    return model


def _train_steps(check: _Check, model: nn.Module, x: torch.Tensor, num_classes: int, steps: int) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    y = torch.arange(x.shape[0]) % num_classes
    model.train()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(check.logits("train step", model, x, num_classes), y)
        check.call("train step (backward)", loss.backward)
        opt.step()


def _frozen_buffers(model: nn.Module, frozen_members: set[str]) -> set[str]:
    """Buffers a frozen stage lists, and those of each norm layer whose parameters are frozen (or that it lists)."""
    out = {n for n, _ in model.named_buffers() if n in frozen_members}
    for mname, mod in model.named_modules():
        if not isinstance(mod, _NormBase):
            continue
        own = list(mod.parameters(recurse=False))
        frozen = all(not p.requires_grad for p in own) if own else mname in frozen_members
        if frozen:
            out |= {f"{mname}.{b}" if mname else b for b, _ in mod.named_buffers(recurse=False)}
    return out


def _check_frozen_step(check: _Check, model: nn.Module, x: torch.Tensor, num_classes: int, steps: int,
                       frozen_members: set[str], head_params: set[str], k: int) -> None:
    """SGD steps under ``model.train()`` after ``freeze(model, k)`` change the head and nothing frozen."""
    step = f"train step after freeze(model, {k})"
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    _train_steps(check, model, x, num_classes, steps)
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    frozen_params = {n for n, p in model.named_parameters() if not p.requires_grad}
    moved = changed & frozen_params
    if moved:
        raise check.fail(step, f"changed frozen parameter(s) {few(moved, 6, sort=True)}")
    moved = changed & _frozen_buffers(model, frozen_members)
    if moved:
        modules = sorted({n.rpartition(".")[0] for n in moved})
        training = [m for m in modules if model.get_submodule(m).training]
        why = (f"; {few(training, 6, sort=True)} stayed in training mode under model.train() — lock frozen "
               "BatchNorm layers with zoo_core.plugin_kit.lock_eval (freeze_stages does this)" if training else "")
        raise check.fail(step, f"changed buffer(s) of frozen layers: {few(moved, 6, sort=True)}{why}")
    if not changed & head_params:
        raise check.fail(step, f"no head parameter changed ({few(head_params, 6, sort=True)}); is the head trainable?")


def check_adapter(adapter_or_name: BackboneAdapter | type[BackboneAdapter] | str, name: str | None = None, *,
                  num_classes: int = 3, image_size: int = 32, batch_size: int = 2, steps: int = 2,
                  seed: int = 0) -> None:
    """Check one backbone of an adapter against the plugin contract; raise ``AssertionError`` if not met.

    :param adapter_or_name: an adapter (instance or class), or a registered backbone name.
    :param name: the backbone to build (default: the registered name, or the adapter's first name).
    :param num_classes: head size for ``create``; ``replace_head`` is checked with ``num_classes + 2``.
    :param image_size: side of the random test images; models that need a fixed size fall back to
        their ``data_config`` input size (e.g. ViT).

    Checks, in order: ``names()``; ``create(name, weights=None, num_classes)`` gives ``(B, num_classes)``
    logits; ``replace_head`` changes the output size; the module ``head_name()`` names produces the
    logits itself (not a container around it); ``stages()`` puts every non-head parameter and buffer in
    exactly one stage, no stage is normalisation layers only (a final norm goes with the last block), and
    the stages are in forward order (forward pre-hooks); in train mode ``model(x)`` is one
    ``[B, num_classes]`` tensor (no auxiliary logits); ``freeze(model, 0)`` leaves exactly the head trainable and ``freeze(model, 1)`` the head plus the last
    stage; SGD steps under ``model.train()`` change the head but leave every frozen parameter and every
    frozen BatchNorm buffer bit-for-bit unchanged, and every module of a frozen stage (Dropout included)
    stays in eval mode; ``features(model, x)`` has shape
    ``(B, head.in_features)`` and the head applied to it gives the model's logits; a state dict saved
    with ``torch.save`` loads with ``weights_only=True`` into a fresh model with identical outputs.
    An adapter that relies on the default stages for a model that is not a plain sequential CNN gets a
    ``UserWarning`` saying what to check.
    """
    adapter, name = _resolve(adapter_or_name, name)
    check = _check_static(adapter, name, batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _run(check, num_classes, image_size, steps)


def _resolve(adapter_or_name: BackboneAdapter | type[BackboneAdapter] | str,
             name: str | None) -> tuple[BackboneAdapter, str | None]:
    """The adapter to check, and the backbone name when one was given."""
    if isinstance(adapter_or_name, str):
        if name not in (None, adapter_or_name):
            raise ValueError(f"pass either a backbone name or an adapter and a name, not {adapter_or_name!r} and {name!r}")
        return get_adapter(adapter_or_name)[0], adapter_or_name
    adapter = adapter_or_name() if isinstance(adapter_or_name, type) else adapter_or_name
    if not isinstance(adapter, BackboneAdapter):
        raise AssertionError(f"check_adapter: {adapter!r} is not a zoo_core.BackboneAdapter subclass instance")
    return adapter, name


def _check_static(adapter: BackboneAdapter, name: str | None, batch_size: int) -> _Check:
    """``names()``, ``family`` and ``available_weights(name)``, before any model is built."""
    names = list(adapter.names())
    if not names or not all(isinstance(n, str) and n for n in names):
        raise AssertionError(f"check_adapter({type(adapter).__name__}): names() must be non-empty strings, got {names[:5]!r}")
    if len(set(names)) != len(names):
        dupes = {n for n in names if names.count(n) > 1}
        raise AssertionError(f"check_adapter({type(adapter).__name__}): names() lists {few(dupes, 6, sort=True)} more than once")
    name = name or names[0]
    check = _Check(adapter, name, batch_size)
    if name not in names:
        raise check.fail("names()", f"{name!r} is not among the adapter's names ({few(names, 6, sort=True)})")
    if not isinstance(adapter.family, str) or not adapter.family:
        raise check.fail("family", f"must be a non-empty string, got {adapter.family!r}")
    weights = check.call("available_weights(name)", adapter.available_weights, name)
    if not isinstance(weights, list) or not all(isinstance(w, str) for w in weights):
        raise check.fail("available_weights(name)", f"must return a list of str, got {weights!r}")
    return check


def _run(check: _Check, num_classes: int, image_size: int, steps: int) -> None:
    adapter, name = check.adapter, check.name
    step = f"create({name!r}, weights=None, num_classes={num_classes})"
    model = check.module(step, check.call(step, adapter.create, name, weights=None, num_classes=num_classes),
                         "return the model")
    x = _input_for(check, step, model, image_size, num_classes)

    for n in (num_classes + 2, num_classes):
        model = _check_replace_head(check, model, x, n)

    head_name, head, head_params = check.head(model)
    stagecheck.check_head_output(check, model, x, head_name)
    stagecheck.default_stages_warning(adapter, model)
    stages = stagecheck.check_partition(check, model, head_name)
    stagecheck.check_no_norm_only_stage(check, model, stages)
    stagecheck.check_forward_order(check, model, x, stages)
    model.train()
    check.logits("train-mode forward", model, x, num_classes)
    model = _check_freeze(check, model, stages, head_params)
    for k in (1, 0):
        model = adapter.freeze(model, k)
        frozen_members = {m for _, members in stages[: len(stages) - k] for m in members}
        _check_frozen_step(check, model, x, num_classes, steps, frozen_members, head_params, k)
        stagecheck.check_frozen_modes(check, model, frozen_members, k)

    model.eval()
    with torch.no_grad():
        logits = check.logits("eval forward", model, x, num_classes)
        _check_features(check, model, x, logits, head_name, head)
        _check_round_trip(check, model, x, logits, num_classes)


def _check_freeze(check: _Check, model: nn.Module, stages: list[tuple[str, list[str]]],
                  head_params: set[str]) -> nn.Module:
    """``freeze(model, 0)`` leaves only the head trainable, ``freeze(model, 1)`` the head and the last stage."""
    expected = {0: set(head_params), 1: set(head_params)}
    expected[1] |= {n for n, _ in model.named_parameters() if n in set(stages[-1][1])}
    for k in (0, 1):
        step = f"freeze(model, {k})"
        model = check.module(step, check.call(step, check.adapter.freeze, model, k), "freeze must return the model")
        what = "only the head" if k == 0 else f"the head and the last stage {stages[-1][0]!r}"
        check.expect_trainable(f"{step} (expected {what} to train)", model, expected[k])
    return model


def _check_features(check: _Check, model: nn.Module, x: torch.Tensor, logits: torch.Tensor,
                    head_name: str, head: nn.Module) -> None:
    """``features(model, x)`` is ``(batch, head.in_features)`` and is exactly what the head receives."""
    step = "features(model, x)"
    feats = check.call(step, check.adapter.features, model, x)
    if not isinstance(feats, torch.Tensor):
        raise check.fail(step, f"returned {type(feats).__name__}, expected a tensor")
    dim = getattr(head, "in_features", None)
    want = (x.shape[0], dim) if dim is not None else (x.shape[0], feats.shape[-1])
    if tuple(feats.shape) != want or feats.ndim != 2:
        raise check.fail(step, f"has shape {tuple(feats.shape)}, expected {want} "
                         f"(batch, in_features of head {head_name!r})")
    if isinstance(head, nn.Linear):
        from_feats = head(feats)
        if not torch.allclose(from_feats, logits, rtol=1e-4, atol=1e-4 * (1 + logits.abs().max().item())):
            diff = (from_feats - logits).abs().max().item()
            raise check.fail(step, f"head(features) differs from model(x) by up to {diff:.3g}: "
                             "features must be exactly what the head receives")


def _check_round_trip(check: _Check, model: nn.Module, x: torch.Tensor, logits: torch.Tensor,
                      num_classes: int) -> None:
    """A state dict saved with ``torch.save`` loads (``weights_only=True``) into a fresh model, same outputs."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    step = "state_dict round trip"
    state = check.call(step + " (torch.load weights_only=True)", torch.load, buf, map_location="cpu",
                       weights_only=True)
    fresh = check.call(step + " (create)", check.adapter.create, check.name, weights=None, num_classes=num_classes)
    check.call(step + " (load_state_dict)", fresh.load_state_dict, state)
    fresh.eval()
    again = check.logits(step, fresh, x, num_classes)
    if not torch.equal(again, logits):
        diff = (again - logits).abs().max().item()
        raise check.fail(step, f"a fresh model loaded with the saved state dict gives other outputs "
                         f"(max difference {diff:.3g}); is some state kept outside the state dict?")


def adapter_names_for_tests(
    adapter: BackboneAdapter | type[BackboneAdapter], pattern: str | None = None, limit: int | None = None
) -> list[str]:
    """Sorted names of ``adapter`` (optionally a glob ``pattern`` and the first ``limit``) for
    ``pytest.mark.parametrize``: ``@pytest.mark.parametrize("name", adapter_names_for_tests(MyAdapter()))``."""
    inst = adapter() if isinstance(adapter, type) else adapter
    names = sorted(n for n in inst.names() if pattern is None or fnmatch.fnmatch(n, pattern))
    return names if limit is None else names[:limit]


def check_plugin(plugin: object) -> list[BackboneAdapter]:
    """Check a plugin module (or object) the way the core loads it; return the adapters it registers.

    Its hookimpls must match :mod:`zoo_core.backbones.hookspecs` (a misspelt hook or argument fails), its
    ``register_backbones`` must register at least one ``BackboneAdapter``, and no backbone name may be
    registered twice.
    """
    pm = new_plugin_manager()
    try:
        register_checked(pm, plugin, name="plugin-under-test")
    except pluggy.PluginValidationError as exc:
        raise AssertionError(f"check_plugin({plugin!r}): {exc}") from exc
    adapters: list[BackboneAdapter] = []

    def register(adapter: BackboneAdapter) -> None:
        if not isinstance(adapter, BackboneAdapter):
            raise TypeError(f"register() got {adapter!r}, not a zoo_core.BackboneAdapter")
        adapters.append(adapter)

    try:
        pm.hook.register_backbones(register=register)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - reported with the plugin's own line
        raise AssertionError(f"check_plugin({plugin!r}): register_backbones {short_error(exc)}") from exc
    if not adapters:
        raise AssertionError(f"check_plugin({plugin!r}): register_backbones registered no adapter")
    seen: dict[str, str] = {}
    for adapter in adapters:
        for n in adapter.names():
            if n in seen:
                raise AssertionError(f"check_plugin: {n!r} registered by both {seen[n]} and {type(adapter).__name__}")
            seen[n] = type(adapter).__name__
    return adapters
