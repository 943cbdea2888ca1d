"""Backbones: the plugin contract, the plugins it loads, and the models they make.

* :mod:`.hookspecs` — the hook spec (``register_backbones``) and the ``hookimpl`` / ``hookspec`` markers;
* :mod:`.manager` — loading the ``backbone_zoo`` entry points (``BACKBONE_ZOO_PLUGINS``), explaining a
  plugin's failure;
* :mod:`.registry` — :class:`~.registry.BackboneRegistry`, the one object that owns the pluggy
  ``PluginManager`` and its records (names → adapters, owners, load errors, plugin reports);
* :mod:`.adapter` — ``BackboneAdapter``, ``DataConfig``, ``BackboneInfo``;
* :mod:`.models` — ``create`` and ``info`` by name;
* :mod:`.torchvision_family` — the shared base of torchvision-backed adapters;
* :mod:`.weights` — local checkpoints, the torch-hub cache, offline hints;
* :mod:`.freezing` — heads, stages, freezing with BatchNorm kept in eval;
* :mod:`.conformance` — the conformance kit (public path :mod:`zoo_core.testing`).

Plugins import what they need from :mod:`zoo_core.plugin_kit`, not from here.
"""
