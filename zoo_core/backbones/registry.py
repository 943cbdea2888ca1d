"""The backbone registry: names → adapters, built from every plugin's ``register_backbones``.

A name claimed by two plugins (or twice by one) is a *conflict*: it is still listed — once, with every
owner — but :func:`get_adapter` of it raises :class:`DuplicateBackboneError` naming the owners and the
fix, so creating, training or comparing *that* name fails while every other backbone keeps working.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from typing import Sequence

from . import plugins
from .adapter import BackboneAdapter
from .errors import DuplicateBackboneError, UnknownBackboneError, ZooError
from .plugins import PluginRecord


@dataclass(frozen=True)
class _Entry:
    adapter: BackboneAdapter
    plugin: str


_claims: dict[str, list[_Entry]] = {}  # backbone name → every (adapter, plugin) registering it; ≥ 2: conflict
_records: dict[str, PluginRecord] = {}  # plugin name → what it registered, or its error
_built = False


def _reset() -> None:
    global _built
    _claims.clear()
    _records.clear()
    _built = False


plugins.on_change(_reset)


def _collect(pm, name: str, plugin: object) -> tuple[list[tuple[BackboneAdapter, list[str]]], str | None]:
    """Call one plugin's ``register_backbones``; return ``(adapter, its names)`` pairs or the error."""
    adapters: list[BackboneAdapter] = []

    def register(adapter: BackboneAdapter) -> None:
        if not isinstance(adapter, BackboneAdapter):
            raise TypeError(
                f"plugin {name!r} registered {adapter!r}, which is not a zoo_core.BackboneAdapter"
            )
        adapters.append(adapter)

    others = [p for p in pm.get_plugins() if p is not plugin]
    try:
        pm.subset_hook_caller("register_backbones", remove_plugins=others)(register=register)
        out = []
        for adapter in adapters:
            names = list(adapter.names())
            bad = [n for n in names if not isinstance(n, str) or not n]
            if bad:
                raise TypeError(f"{type(adapter).__name__}.names() returned {bad[0]!r}; names must be "
                                "non-empty strings")
            out.append((adapter, list(dict.fromkeys(names))))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - one broken plugin must not break the others
        return [], plugins.short_error(exc)
    return out, None


def _build() -> None:
    global _built
    if _built:
        return
    pm = plugins.get_plugin_manager()
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda np: np[0]):
        dist, version = plugins.distribution_of(pm, plugin)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        record = PluginRecord(name=name, distribution=dist, version=version, hooks=hooks)
        _records[name] = record
        if "register_backbones" not in hooks:
            continue
        adapters, record.error = _collect(pm, name, plugin)
        for adapter, names in adapters:
            for bname in names:
                record.backbones.append(bname)
                _claims.setdefault(bname, []).append(_Entry(adapter, name))
    for bname, entries in _claims.items():
        owners = list(dict.fromkeys(e.plugin for e in entries))
        for owner in owners if len(entries) > 1 else []:
            others = " and ".join(repr(o) for o in owners if o != owner)
            by = f"also registered by {others}" if others else f"registered by {len(entries)} of its adapters"
            rec = _records[owner]
            rec.error = rec.error or (f"backbone {bname!r} is {by}: unusable until only one registers it "
                                      f"(`zoo list {bname}` shows how)")
    for rec in plugins.load_errors():
        _records.setdefault(rec.name, rec)
    _built = True


def _owners(entries: list[_Entry]) -> str:
    """``"'aaa' (dupz 0.1) and 'resnet' (zoo-resnet 0.1.0)"``: the plugins claiming one name."""
    parts = []
    for plugin in dict.fromkeys(e.plugin for e in entries):
        rec = _records.get(plugin)
        times = sum(e.plugin == plugin for e in entries)
        dist = f"{rec.distribution} {rec.version}" if rec and rec.distribution else "registered in-process"
        parts.append(f"{plugin!r} ({dist}{f', {times} adapters' if times > 1 else ''})")
    return " and ".join(parts)


def conflict_message(name: str) -> str | None:
    """Why ``name`` cannot be used because several plugins register it, with the fix; ``None`` if it can."""
    _build()
    entries = _claims.get(name, [])
    if len(entries) < 2:
        return None
    owners = list(dict.fromkeys(e.plugin for e in entries))
    if len(owners) == 1:
        return (f"backbone {name!r} is registered {len(entries)} times by plugin {_owners(entries)}; each "
                "name must come from one adapter: fix the names() of that plugin's adapters")
    from_dist = [o for o in owners if _records[o].distribution]
    in_process = [o for o in owners if o not in from_dist]
    fixes = []
    if not in_process:  # the env var selects entry points only
        loaded = [r.name for r in _records.values() if r.distribution and r.hooks]
        for keep in owners:
            value = ",".join(p for p in loaded if p not in owners or p == keep)
            fixes.append(f"{plugins.ENV_VAR}={value} keeps {keep!r}")
    if from_dist:
        dists = " or ".join(str(_records[o].distribution) for o in from_dist)
        fixes.append(f"`pip uninstall` the distribution you do not want ({dists})")
    fixes += [f"zoo_core.unregister_plugin({o!r})" for o in in_process]
    return (f"backbone {name!r} is registered by several plugins: {_owners(entries)}; load only one of "
            f"them: {', or '.join(fixes)}")


def plugins_report() -> list[PluginRecord]:
    """Every plugin with its distribution, version, hooks, backbones and load error (if any)."""
    _build()
    return sorted(_records.values(), key=lambda r: r.name)


def get_adapter(name: str) -> tuple[BackboneAdapter, str]:
    """Return ``(adapter, plugin name)`` for backbone ``name``; raise with close matches if unknown,
    and :class:`DuplicateBackboneError` naming every owner if several plugins register it."""
    _build()
    conflict = conflict_message(name)
    if conflict:
        raise DuplicateBackboneError(conflict)
    entries = _claims.get(name)
    if not entries:
        raise UnknownBackboneError(unknown_message(name))
    return entries[0].adapter, entries[0].plugin


def owners(name: str) -> list[tuple[BackboneAdapter, str]]:
    """Every ``(adapter, plugin name)`` registering ``name`` (more than one: a conflict; none: unknown)."""
    _build()
    return [(e.adapter, e.plugin) for e in _claims.get(name, [])]


def unknown_message(name: str) -> str:
    """The error text for an unknown backbone, with the closest registered names."""
    _build()
    names = list(_claims)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    if not close:
        low = name.lower()
        close = [n for n in names if low in n.lower()][:5]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    note = plugins.selection_note()
    return (
        f"Unknown backbone {name!r}.{hint} Run `zoo list` to see the {len(names)} available "
        "backbones (timm ones are prefixed 'timm/')." + (f" Note: {note}." if note else "")
    )


def list_backbones(
    pattern: str | None = None, *, pretrained: bool = False, family: str | None = None
) -> list[str]:
    """Sorted backbone names matching the glob ``pattern`` (case-insensitive).

    A name several plugins register is listed once (see :func:`conflict_message`) and matches a
    ``family`` filter or ``pretrained`` if any of its owners does.

    :param pretrained: only names whose ``weights="DEFAULT"`` is pretrained.
    :param family: only this family (``resnet``, ``vgg``, ``timm``, …) or plugin name.
    """
    _build()
    out = []
    for name, entries in _claims.items():
        if pattern and not fnmatch.fnmatch(name.lower(), pattern.lower()):
            continue
        if family:
            entries = [e for e in entries if family in (e.adapter.family, e.plugin)]
        if pretrained:
            entries = [e for e in entries if e.adapter.has_pretrained(name)]
        if entries:
            out.append(name)
    return sorted(out)


def families() -> list[str]:
    """Every family name in the registry."""
    _build()
    return sorted({e.adapter.family for entries in _claims.values() for e in entries})


def expand_backbones(backbones: Sequence[str] | str | None, family: str | None = None) -> list[str]:
    """Resolve names, glob patterns (``"resnet*"``) and a family into a de-duplicated list."""
    items = [backbones] if isinstance(backbones, str) else list(backbones or [])
    out: list[str] = []
    for item in items:
        if any(ch in item for ch in "*?["):
            found = list_backbones(item, family=family)
            if not found:
                raise ZooError(f"pattern {item!r} matches no backbone{f' of family {family!r}' if family else ''}")
            out += found
        else:
            try:
                get_adapter(item)  # unknown names fail here, with close matches
            except DuplicateBackboneError:
                pass  # several plugins register it: its entries are recorded as failed, the rest run
            out.append(item)
    if family and not items:
        out = list_backbones(family=family)
        if not out:
            raise ZooError(f"family {family!r} has no backbones; known: {', '.join(families())}")
    if not out:
        raise ZooError("no backbones given: name some, use a pattern like 'resnet*', or --family")
    return list(dict.fromkeys(out))
