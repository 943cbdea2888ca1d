"""Plugin loading through pluggy: which ``backbone_zoo`` entry points load, and how a plugin's failure is told.

Stateless helpers; :class:`zoo_core.backbones.registry.BackboneRegistry` owns the one ``PluginManager``
and what it loaded. ``BACKBONE_ZOO_PLUGINS`` (a comma list of entry-point or distribution names, or empty
for none) restricts which entry points load.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import inspect
import os
import re
import traceback
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "backbone_zoo"
ENV_VAR = "BACKBONE_ZOO_PLUGINS"
# frames in these folders are the machinery, not the plugin: error locations skip them
_MACHINERY = tuple(os.path.dirname(m.__file__) + os.sep for m in (hookspecs, pluggy, importlib))


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


@dataclass
class EntryPoints:
    """What one read of the ``backbone_zoo`` entry points found."""

    chosen: list[md.EntryPoint]  # allowed by BACKBONE_ZOO_PLUGINS, sorted by name
    installed: list[str]  # every installed entry-point name, whether or not it was allowed to load
    unmatched: list[str]  # names in BACKBONE_ZOO_PLUGINS that no installed entry point has


def new_plugin_manager() -> pluggy.PluginManager:
    """An empty ``PluginManager`` that knows the hook specs."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def allowed_plugins() -> set[str] | None:
    """Entry-point names allowed by ``BACKBONE_ZOO_PLUGINS`` (``None``: no restriction)."""
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def entry_points() -> EntryPoints:
    """The installed entry points and the ones ``BACKBONE_ZOO_PLUGINS`` allows."""
    eps = list(md.entry_points(group=ENTRY_POINT_GROUP))
    allowed = allowed_plugins()
    wanted = None if allowed is None else {_canonical(a): a for a in allowed}
    chosen, matched = [], set()
    for ep in eps:
        keys = {_canonical(ep.name)} | ({_canonical(ep.dist.name)} if ep.dist else set())
        if wanted is None or keys & set(wanted):
            chosen.append(ep)
            matched |= keys
    unmatched = [] if wanted is None else sorted(v for k, v in wanted.items() if k not in matched)
    return EntryPoints(sorted(chosen, key=lambda ep: ep.name), sorted({ep.name for ep in eps}), unmatched)


def selection_note(found: EntryPoints) -> str | None:
    """One sentence on what ``BACKBONE_ZOO_PLUGINS`` does right now (``None`` when it is unset)."""
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return None
    installed = ", ".join(found.installed) or "none"
    if found.unmatched:
        return (f"{ENV_VAR}={raw!r} names no installed plugin called {', '.join(map(repr, found.unmatched))} "
                f"(installed: {installed}); fix the name, or unset {ENV_VAR} to load every plugin")
    return f"{ENV_VAR}={raw!r} limits which plugins load (installed: {installed})"


def error_location(exc: BaseException) -> str | None:
    """``file:line`` of the innermost traceback frame outside zoo_core, pluggy and importlib: the
    plugin's own line that raised (or called what raised). ``None`` when there is no such frame."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    own = [f for f in frames if not f.filename.startswith(("<frozen", *_MACHINERY))]
    return f"{own[-1].filename}:{own[-1].lineno}" if own else None


def short_error(exc: BaseException) -> str:
    """One line: the exception, and where in the plugin it came from."""
    if isinstance(exc, SystemExit):
        text = f"called sys.exit({exc.code!r})"
    else:
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
    where = error_location(exc)
    return f"{text} ({where})" if where else text


def _hookimpl_location(plugin: object, hook: str) -> str | None:
    fn = getattr(plugin, hook, None)
    try:
        fn = inspect.unwrap(fn)  # type: ignore[arg-type]
        return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (TypeError, OSError):
        return None


def _explain_validation(exc: pluggy.PluginValidationError) -> pluggy.PluginValidationError:
    """``exc`` as one line, with a close hook name for a misspelt hook and the hookimpl's file:line."""
    msg = " ".join(str(exc).split())
    match = re.search(r"(?:unknown hook|for hook) '(\w+)'", msg)
    if match:
        hook = match.group(1)
        specs = [n for n in vars(hookspecs) if hasattr(getattr(hookspecs, n), f"{hookspecs.PROJECT_NAME}_spec")]
        close = difflib.get_close_matches(hook, specs, n=1, cutoff=0.6) if hook not in specs else []
        if close:
            msg += f"; did you mean {close[0]!r}? (hooks: {', '.join(specs)})"
        where = _hookimpl_location(exc.plugin, hook)
        if where:
            msg += f" ({where})"
    return pluggy.PluginValidationError(exc.plugin, msg)


def check_pending(pm: pluggy.PluginManager) -> None:
    """``pm.check_pending()``; a misspelt hook's error names the closest hook and the hookimpl's line."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise _explain_validation(exc) from None


def register_checked(pm: pluggy.PluginManager, plugin: object, name: str | None = None) -> str | None:
    """``pm.register`` + :func:`check_pending`, with explained validation errors; nothing is left
    registered when either fails."""
    try:
        registered = pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise _explain_validation(exc) from None
    try:
        check_pending(pm)
    except BaseException:
        pm.unregister(plugin=plugin)  # do not leave a half-valid plugin behind
        raise
    return registered


def load_entry_points(pm: pluggy.PluginManager, found: EntryPoints) -> dict[str, PluginRecord]:
    """Load each chosen entry point on its own into ``pm``; return a record per entry point that failed.

    One that fails to import or to validate (even one calling ``sys.exit()``) is unregistered and
    recorded, and the others still load; ``pm.check_pending()`` runs after each.
    """
    errors: dict[str, PluginRecord] = {}
    for ep in found.chosen:
        try:
            _load_entry_point(pm, ep.name)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken plugin must not break the others
            if pm.get_plugin(ep.name) is not None:
                pm.unregister(name=ep.name)
            dist = ep.dist
            errors[ep.name] = PluginRecord(
                name=ep.name,
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
                error=f"failed to load {ep.value!r}: {short_error(exc)}",
            )
    check_pending(pm)
    return errors


def _load_entry_point(pm: pluggy.PluginManager, name: str) -> None:
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
    except pluggy.PluginValidationError as exc:  # hookimpl arguments that do not match the spec
        raise _explain_validation(exc) from None
    check_pending(pm)  # a misspelt hookimpl fails here, blamed on this entry point alone


def distribution_of(pm: pluggy.PluginManager, plugin: object) -> tuple[str | None, str | None]:
    """``(distribution name, version)`` a loaded plugin came from, or ``(None, None)``."""
    for loaded, dist in pm.list_plugin_distinfo():
        if loaded is plugin:
            return dist.project_name, dist.version
    return None, None
