"""The backbone registry: one :class:`BackboneRegistry` owns the pluggy ``PluginManager`` and what it knows.

Names → adapters are built from every plugin's ``register_backbones``. A name claimed by two plugins (or
twice by one) is a *conflict*: it is still listed — once, with every owner — but :func:`get_adapter` of it
raises :class:`DuplicateBackboneError` naming the owners and the fix, so creating, training or comparing
*that* name fails while every other backbone keeps working. The module-level functions are calls on the
one default instance, :data:`REGISTRY`.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Sequence

import pluggy

from ..errors import DuplicateBackboneError, UnknownBackboneError, UnknownFamilyError, ZooError
from . import manager, probe
from .adapter import BackboneAdapter
from .manager import PluginRecord


@dataclass(frozen=True)
class _Entry:
    adapter: BackboneAdapter
    plugin: str


@dataclass
class _Index:
    """What the registered plugins provide, built on the first lookup after a change."""

    claims: dict[str, list[_Entry]] = field(default_factory=dict)  # backbone → every (adapter, plugin); ≥ 2: conflict
    records: dict[str, PluginRecord] = field(default_factory=dict)  # plugin name → what it registered, or its error


def _collect(pm: pluggy.PluginManager, name: str, plugin: object) -> tuple[list[tuple[BackboneAdapter, list[str]]], str | None]:
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
        return [], manager.short_error(exc)
    return out, None


def _index(pm: pluggy.PluginManager, load_errors: dict[str, PluginRecord]) -> _Index:
    """Every plugin's record and backbone claims; a conflict is an error on each owner's record."""
    index = _Index()
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda np: np[0]):
        dist, version = manager.distribution_of(pm, plugin)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        record = index.records[name] = PluginRecord(name=name, distribution=dist, version=version, hooks=hooks)
        if "register_backbones" not in hooks:
            continue
        adapters, record.error = _collect(pm, name, plugin)
        for adapter, names in adapters:
            for bname in names:
                record.backbones.append(bname)
                index.claims.setdefault(bname, []).append(_Entry(adapter, name))
    for bname, entries in index.claims.items():
        owners = list(dict.fromkeys(e.plugin for e in entries))
        for owner in owners if len(entries) > 1 else []:
            others = " and ".join(repr(o) for o in owners if o != owner)
            by = f"also registered by {others}" if others else f"registered by {len(entries)} of its adapters"
            rec = index.records[owner]
            rec.error = rec.error or (f"backbone {bname!r} is {by}: unusable until only one registers it "
                                      f"(`zoo list {bname}` shows how)")
    for rec in load_errors.values():
        index.records.setdefault(rec.name, rec)
    return index


def _owners_text(entries: list[_Entry], records: dict[str, PluginRecord]) -> str:
    """``"'aaa' (dupz 0.1) and 'resnet' (zoo-resnet 0.1.0)"``: the plugins claiming one name."""
    parts = []
    for plugin in dict.fromkeys(e.plugin for e in entries):
        rec = records.get(plugin)
        times = sum(e.plugin == plugin for e in entries)
        dist = f"{rec.distribution} {rec.version}" if rec and rec.distribution else "registered in-process"
        parts.append(f"{plugin!r} ({dist}{f', {times} adapters' if times > 1 else ''})")
    return " and ".join(parts)


class BackboneRegistry:
    """The plugin manager and its records: plugins in, backbone names → adapters out.

    Like pluggy's ``PluginManager`` it is one object holding everything registered; the entry points
    load on first use, and the name index is rebuilt on the first lookup after any change.
    """

    def __init__(self) -> None:
        self._pm: pluggy.PluginManager | None = None  # with the entry points loaded; None until first use
        self._found = manager.EntryPoints([], [], [])  # the entry points the manager was built from
        self._load_errors: dict[str, PluginRecord] = {}  # entry points that failed to load, by name
        self._index: _Index | None = None  # names and records; None after any change

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The ``PluginManager``, with the allowed entry points loaded on first use."""
        return self._load()

    def _load(self) -> pluggy.PluginManager:
        """Load each allowed entry point on its own, so one that fails is recorded and the others still load."""
        if self._pm is None:
            pm = manager.new_plugin_manager()
            self._found = manager.entry_points()
            self._load_errors = manager.load_entry_points(pm, self._found)
            self._pm = pm
        return self._pm

    def register_plugin(self, plugin: object, name: str | None = None) -> str:
        """Register an in-process plugin object (a module or class with hookimpls); return its name."""
        pm = self._load()
        registered = manager.register_checked(pm, plugin, name=name)
        self._index = None
        return registered or (name or pm.get_name(plugin) or "")

    def unregister_plugin(self, name_or_plugin: str | object) -> None:
        """Remove a plugin registered with :meth:`register_plugin` (or loaded from an entry point)."""
        pm = self._load()
        if isinstance(name_or_plugin, str):
            pm.unregister(name=name_or_plugin)
        else:
            pm.unregister(plugin=name_or_plugin)
        self._index = None

    def reload(self) -> None:
        """Forget every loaded plugin; the next use re-reads the entry points (e.g. after a pip install)."""
        self._pm, self._index = None, None
        self._load_errors = {}
        self._found = manager.EntryPoints([], [], [])

    def selection_note(self) -> str | None:
        """One sentence on what ``BACKBONE_ZOO_PLUGINS`` does right now (``None`` when it is unset)."""
        self._load()
        return manager.selection_note(self._found)

    def _built(self) -> _Index:
        pm = self._load()
        if self._index is None:
            self._index = _index(pm, self._load_errors)
        return self._index

    def plugins_report(self) -> list[PluginRecord]:
        """Every plugin with its distribution, version, hooks, backbones and load error (if any)."""
        return sorted(self._built().records.values(), key=lambda r: r.name)

    def get_adapter(self, name: str) -> tuple[BackboneAdapter, str]:
        """``(adapter, plugin name)`` for backbone ``name``; raise with close matches if unknown, and
        :class:`DuplicateBackboneError` naming every owner if several plugins register it."""
        conflict = self.conflict_message(name)
        if conflict:
            raise DuplicateBackboneError(conflict)
        entries = self._built().claims.get(name)
        if not entries:
            raise UnknownBackboneError(self.unknown_message(name))
        return entries[0].adapter, entries[0].plugin

    def owners(self, name: str) -> list[tuple[BackboneAdapter, str]]:
        """Every ``(adapter, plugin name)`` registering ``name`` (more than one: a conflict; none: unknown)."""
        return [(e.adapter, e.plugin) for e in self._built().claims.get(name, [])]

    def conflict_message(self, name: str) -> str | None:
        """Why ``name`` cannot be used because several plugins register it, with the fix; ``None`` if it can."""
        index = self._built()
        entries = index.claims.get(name, [])
        if len(entries) < 2:
            return None
        owners = list(dict.fromkeys(e.plugin for e in entries))
        who = _owners_text(entries, index.records)
        if len(owners) == 1:
            return (f"backbone {name!r} is registered {len(entries)} times by plugin {who}; each name must "
                    "come from one adapter: fix the names() of that plugin's adapters")
        from_dist = [o for o in owners if index.records[o].distribution]
        in_process = [o for o in owners if o not in from_dist]
        fixes = []
        if not in_process:  # the env var selects entry points only
            loaded = [r.name for r in index.records.values() if r.distribution and r.hooks]
            for keep in owners:
                value = ",".join(p for p in loaded if p not in owners or p == keep)
                fixes.append(f"{manager.ENV_VAR}={value} keeps {keep!r}")
        if from_dist:
            dists = " or ".join(str(index.records[o].distribution) for o in from_dist)
            fixes.append(f"`pip uninstall` the distribution you do not want ({dists})")
        fixes += [f"zoo_core.unregister_plugin({o!r})" for o in in_process]
        return f"backbone {name!r} is registered by several plugins: {who}; load only one of them: {', or '.join(fixes)}"

    def unknown_message(self, name: str) -> str:
        """The error text for an unknown backbone, with the closest registered names."""
        names = list(self._built().claims)
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
        if not close:
            low = name.lower()
            close = [n for n in names if low in n.lower()][:5]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        note = self.selection_note()
        return (f"Unknown backbone {name!r}.{hint} Run `zoo list` to see the {len(names)} available "
                "backbones (timm ones are prefixed 'timm/')." + (f" Note: {note}." if note else ""))

    def list_backbones(self, pattern: str | None = None, *, pretrained: bool = False,
                       family: str | None = None, feature_dim: int | None = None) -> list[str]:
        """Sorted backbone names matching the glob ``pattern`` (case-insensitive); see :func:`list_backbones`."""
        if family:
            self.check_family(family)
        out = []
        for name, entries in self._built().claims.items():
            if pattern and not fnmatch.fnmatch(name.lower(), pattern.lower()):
                continue
            if family:
                entries = [e for e in entries if family in (e.adapter.family, e.plugin)]
            if pretrained:
                entries = [e for e in entries if e.adapter.has_pretrained(name)]
            if feature_dim is not None:  # the one filter that builds models (on the meta device, cached)
                entries = [e for e in entries if probe.feature_dim(e.adapter, name) == feature_dim]
            if entries:
                out.append(name)
        return sorted(out)

    def check_family(self, family: str) -> None:
        """Raise :class:`UnknownFamilyError` with close matches unless ``family`` is a family or plugin."""
        known = sorted({*self.families(), *self._built().records})
        if family in known:
            return
        close = difflib.get_close_matches(family, known, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownFamilyError(f"unknown family {family!r}.{hint} Known families and plugins: {', '.join(known)}")

    def families(self) -> list[str]:
        """Every family name in the registry."""
        return sorted({e.adapter.family for entries in self._built().claims.values() for e in entries})

    def expand_backbones(self, backbones: Sequence[str] | str | None, family: str | None = None) -> list[str]:
        """Resolve names, glob patterns (``"resnet*"``) and a family into a de-duplicated list."""
        items = [backbones] if isinstance(backbones, str) else list(backbones or [])
        out: list[str] = []
        for item in items:
            if any(ch in item for ch in "*?["):
                found = self.list_backbones(item, family=family)
                if not found:
                    raise ZooError(f"pattern {item!r} matches no backbone{f' of family {family!r}' if family else ''}")
                out += found
            else:
                try:
                    self.get_adapter(item)  # unknown names fail here, with close matches
                except DuplicateBackboneError:
                    pass  # several plugins register it: its entries are recorded as failed, the rest run
                out.append(item)
        if family and not items:
            out = self.list_backbones(family=family)
            if not out:
                raise ZooError(f"family {family!r} has no backbones; known: {', '.join(self.families())}")
        if not out:
            raise ZooError("no backbones given: name some, use a pattern like 'resnet*', or --family")
        return list(dict.fromkeys(out))


REGISTRY = BackboneRegistry()
"""The one registry every module-level function below (and ``zoo_core``'s API) uses."""


def get_plugin_manager() -> pluggy.PluginManager:
    """The default registry's ``PluginManager`` (entry points loaded on first call)."""
    return REGISTRY.plugin_manager


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register an in-process plugin object (a module or class with hookimpls); return its name."""
    return REGISTRY.register_plugin(plugin, name)


def unregister_plugin(name_or_plugin: str | object) -> None:
    """Remove a plugin registered with :func:`register_plugin` (or loaded from an entry point)."""
    REGISTRY.unregister_plugin(name_or_plugin)


def reload_plugins() -> None:
    """Forget every loaded plugin and re-read the entry points (e.g. after a pip install)."""
    REGISTRY.reload()


def selection_note() -> str | None:
    """One sentence on what ``BACKBONE_ZOO_PLUGINS`` does right now (``None`` when it is unset)."""
    return REGISTRY.selection_note()


def plugins_report() -> list[PluginRecord]:
    """Every plugin with its distribution, version, hooks, backbones and load error (if any)."""
    return REGISTRY.plugins_report()


def get_adapter(name: str) -> tuple[BackboneAdapter, str]:
    """Return ``(adapter, plugin name)`` for backbone ``name``; raise with close matches if unknown,
    and :class:`DuplicateBackboneError` naming every owner if several plugins register it."""
    return REGISTRY.get_adapter(name)


def owners(name: str) -> list[tuple[BackboneAdapter, str]]:
    """Every ``(adapter, plugin name)`` registering ``name`` (more than one: a conflict; none: unknown)."""
    return REGISTRY.owners(name)


def conflict_message(name: str) -> str | None:
    """Why ``name`` cannot be used because several plugins register it, with the fix; ``None`` if it can."""
    return REGISTRY.conflict_message(name)


def list_backbones(
    pattern: str | None = None, *, pretrained: bool = False, family: str | None = None,
    feature_dim: int | None = None,
) -> list[str]:
    """Sorted backbone names matching the glob ``pattern`` (case-insensitive), filtered by metadata.

    A name several plugins register is listed once (see :func:`conflict_message`) and matches a
    filter if any of its owners does. Pattern, family and pretrained read metadata only (all names in
    well under a second); ``feature_dim`` builds each remaining model once on the meta device (about
    0.1 s a name, remembered for the process), so narrow with the other filters first.

    :param pretrained: only names whose ``weights="DEFAULT"`` is pretrained.
    :param family: only this family (``resnet``, ``vgg``, ``timm``, …) or plugin name; an unknown one
        raises :class:`UnknownFamilyError` with close matches (see :func:`list_families`).
    :param feature_dim: only backbones whose pooled features (``info(name).feature_dim``) have this width.
    """
    return REGISTRY.list_backbones(pattern, pretrained=pretrained, family=family, feature_dim=feature_dim)


def list_families() -> list[str]:
    """Every family name (``resnet``, ``timm``, …) that :func:`list_backbones` accepts as ``family``."""
    return REGISTRY.families()


families = list_families  # the name the CLI and the comparison use


def expand_backbones(backbones: Sequence[str] | str | None, family: str | None = None) -> list[str]:
    """Resolve names, glob patterns (``"resnet*"``) and a family into a de-duplicated list."""
    return REGISTRY.expand_backbones(backbones, family)
