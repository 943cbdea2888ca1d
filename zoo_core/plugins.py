"""The plugin manager: loads ``backbone_zoo`` entry points through pluggy and records each plugin."""

from __future__ import annotations

import importlib.metadata as md
import os
import traceback
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "backbone_zoo"
ENV_VAR = "BACKBONE_ZOO_PLUGINS"


@dataclass
class PluginRecord:
    """One plugin as ``zoo plugins`` shows it."""

    name: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    backbones: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": self.hooks,
            "backbones": len(self.backbones),
            "error": self.error,
        }


_pm: pluggy.PluginManager | None = None  # the one manager, built on first use
_load_errors: dict[str, PluginRecord] = {}  # entry points that failed to import, by name
_listeners: list[Any] = []  # callables run when the set of plugins changes


def allowed_plugins() -> set[str] | None:
    """Entry-point names allowed by ``BACKBONE_ZOO_PLUGINS`` (``None``: no restriction)."""
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _entry_points() -> list[md.EntryPoint]:
    eps = md.entry_points(group=ENTRY_POINT_GROUP)
    allowed = allowed_plugins()
    chosen = [
        ep for ep in eps
        if allowed is None or ep.name in allowed or (ep.dist and ep.dist.name in allowed)
    ]
    return sorted(chosen, key=lambda ep: ep.name)


def _short_error(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the plugin manager, loading the entry-point plugins on first call.

    Each entry point is loaded on its own, so one that fails to import is recorded (see
    :func:`zoo_core.plugins_report`) and the others still load.
    """
    global _pm
    if _pm is not None:
        return _pm
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    _load_errors.clear()
    for ep in _entry_points():
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep.name)
            pm.check_pending()  # a misspelt hookimpl fails here, blamed on this entry point alone
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
            if pm.get_plugin(ep.name) is not None:
                pm.unregister(name=ep.name)
            dist = ep.dist
            _load_errors[ep.name] = PluginRecord(
                name=ep.name,
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
                error=f"failed to load {ep.value!r}: {_short_error(exc)}",
            )
    pm.check_pending()
    _pm = pm
    return pm


def distribution_of(pm: pluggy.PluginManager, plugin: object) -> tuple[str | None, str | None]:
    """``(distribution name, version)`` a loaded plugin came from, or ``(None, None)``."""
    for loaded, dist in pm.list_plugin_distinfo():
        if loaded is plugin:
            return dist.project_name, dist.version
    return None, None


def load_errors() -> list[PluginRecord]:
    """Records of entry points that could not be imported."""
    get_plugin_manager()
    return list(_load_errors.values())


def on_change(callback: Any) -> None:
    """Call ``callback()`` whenever plugins are registered, unregistered or reloaded."""
    _listeners.append(callback)


def _changed() -> None:
    for cb in _listeners:
        cb()


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register an in-process plugin object (a module or class with hookimpls); return its name."""
    pm = get_plugin_manager()
    registered = pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except Exception:
        pm.unregister(plugin=plugin)  # do not leave a half-valid plugin behind
        raise
    _changed()
    return registered or (name or pm.get_name(plugin) or "")


def unregister_plugin(name_or_plugin: str | object) -> None:
    """Remove a plugin registered with :func:`register_plugin` (or loaded from an entry point)."""
    pm = get_plugin_manager()
    if isinstance(name_or_plugin, str):
        pm.unregister(name=name_or_plugin)
    else:
        pm.unregister(plugin=name_or_plugin)
    _changed()


def reload_plugins() -> None:
    """Forget every loaded plugin and re-read the entry points (e.g. after a pip install)."""
    global _pm
    _pm = None
    _load_errors.clear()
    _changed()
