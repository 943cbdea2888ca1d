"""The backbone-zoo hook specification: the whole contract between the core and a plugin.

A plugin is a module (named by an entry point in the ``backbone_zoo`` group) holding functions
decorated with :data:`zoo_core.hookimpl` whose names and arguments match the specs below.
"""

from __future__ import annotations

from typing import Callable

import pluggy

PROJECT_NAME = "backbone_zoo"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_backbones(register: Callable[..., None]) -> None:
    """Register the backbone adapters this plugin provides.

    Called once per plugin when the registry is first built (and again after
    :func:`zoo_core.reload_plugins`). The plugin calls ``register(adapter)`` once for each
    :class:`zoo_core.BackboneAdapter` instance it provides; every name in ``adapter.names()``
    becomes creatable through :func:`zoo_core.create`.

    :param register: callback taking one ``BackboneAdapter``; it validates the adapter and raises
        ``TypeError`` for anything else.
    :returns: nothing; registrations go through ``register``.
    """
