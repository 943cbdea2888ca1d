"""The backbone registry: names → adapters, built from every plugin's ``register_backbones``."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass

from . import plugins
from .adapter import BackboneAdapter
from .errors import DuplicateBackboneError, UnknownBackboneError
from .plugins import PluginRecord


@dataclass
class _Entry:
    adapter: BackboneAdapter
    plugin: str


_backbones: dict[str, _Entry] = {}  # backbone name → adapter and the plugin that registered it
_conflicts: dict[str, list[str]] = {}  # backbone name → every plugin claiming it (≥ 2)
_records: dict[str, PluginRecord] = {}  # plugin name → what it registered, or its error
_built = False


def _reset() -> None:
    global _built
    _backbones.clear()
    _conflicts.clear()
    _records.clear()
    _built = False


plugins.on_change(_reset)


def _collect(pm, name: str, plugin: object) -> tuple[list[BackboneAdapter], str | None]:
    """Call one plugin's ``register_backbones``; return its adapters or the error it raised."""
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
        for adapter in adapters:
            adapter._zoo_names = list(adapter.names())  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - one broken plugin must not break the others
        return [], plugins._short_error(exc)
    return adapters, None


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
        adapters, error = _collect(pm, name, plugin)
        record.error = error
        for adapter in adapters:
            for bname in adapter._zoo_names:  # type: ignore[attr-defined]
                record.backbones.append(bname)
                if bname in _backbones and _backbones[bname].plugin != name:
                    _conflicts.setdefault(bname, [_backbones[bname].plugin]).append(name)
                else:
                    _backbones[bname] = _Entry(adapter, name)
    for bname, owners in _conflicts.items():
        for owner in owners:
            msg = f"backbone {bname!r} is also registered by plugin(s) " + ", ".join(
                repr(o) for o in owners if o != owner
            )
            rec = _records[owner]
            rec.error = msg if rec.error is None else rec.error
    for rec in plugins.load_errors():
        _records.setdefault(rec.name, rec)
    _built = True


def plugins_report() -> list[PluginRecord]:
    """Every plugin with its distribution, version, hooks, backbones and load error (if any)."""
    _build()
    return sorted(_records.values(), key=lambda r: r.name)


def get_adapter(name: str) -> tuple[BackboneAdapter, str]:
    """Return ``(adapter, plugin name)`` for backbone ``name``; raise with close matches if unknown."""
    _build()
    if name in _conflicts:
        owners = ", ".join(repr(o) for o in _conflicts[name])
        raise DuplicateBackboneError(
            f"backbone {name!r} is registered by several plugins ({owners}); keep only one with "
            f"{plugins.ENV_VAR}=<plugin>[,<plugin>...] or uninstall the other distribution"
        )
    entry = _backbones.get(name)
    if entry is None:
        raise UnknownBackboneError(unknown_message(name))
    return entry.adapter, entry.plugin


def unknown_message(name: str) -> str:
    """The error text for an unknown backbone, with the closest registered names."""
    names = list(_backbones)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    if not close:
        low = name.lower()
        close = [n for n in names if low in n.lower()][:5]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"Unknown backbone {name!r}.{hint} Run `zoo list` to see the {len(names)} available "
        "backbones (timm ones are prefixed 'timm/')."
    )


def list_backbones(
    pattern: str | None = None, *, pretrained: bool = False, family: str | None = None
) -> list[str]:
    """Sorted backbone names matching the glob ``pattern`` (case-insensitive).

    :param pretrained: only names whose ``weights="DEFAULT"`` is pretrained.
    :param family: only this family (``resnet``, ``vgg``, ``timm``, …) or plugin name.
    """
    _build()
    out = []
    for name, entry in _backbones.items():
        if pattern and not fnmatch.fnmatch(name.lower(), pattern.lower()):
            continue
        if family and family not in (entry.adapter.family, entry.plugin):
            continue
        if pretrained and not entry.adapter.has_pretrained(name):
            continue
        out.append(name)
    return sorted(out)


def families() -> list[str]:
    """Every family name in the registry."""
    _build()
    return sorted({e.adapter.family for e in _backbones.values()})
