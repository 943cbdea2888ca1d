"""backbone-zoo core: a plugin-based zoo of pretrained vision backbones for transfer learning.

Library API: :func:`list_backbones`, :func:`create`, :func:`info`, :func:`train`, :func:`compare`,
:func:`rank`, :func:`load`, :func:`export`; plugin authors use :data:`hookimpl` and :class:`BackboneAdapter`.
"""

from __future__ import annotations

from typing import Any

from .backbones.adapter import BackboneAdapter, BackboneInfo, DataConfig
from .backbones.hookspecs import hookimpl, hookspec
from .backbones.models import create, info
from .backbones.registry import (
    get_adapter,
    list_backbones,
    plugins_report,
    register_plugin,
    reload_plugins,
    unregister_plugin,
)
from .errors import (
    DataError,
    DuplicateBackboneError,
    TrainingError,
    UnknownBackboneError,
    WeightsError,
    ZooError,
)

__version__ = "0.1.0"

_LAZY_BY_MODULE = {  # heavy modules load on first use so `import zoo_core` stays fast
    "training": ("train", "TrainConfig", "TrainResult", "lr_find"),
    "inference": ("load", "predict"),
    "exporting": ("export", "ExportResult"),
    "comparison": ("compare", "Leaderboard"),
    "ranking": ("rank", "Ranking"),
}
_LAZY = {name: (module, name) for module, names in _LAZY_BY_MODULE.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'zoo_core' has no attribute {name!r}")


__all__ = [
    "BackboneAdapter", "BackboneInfo", "DataConfig", "DataError", "DuplicateBackboneError",
    "TrainingError", "UnknownBackboneError", "WeightsError", "ZooError", "create", "get_adapter",
    "hookimpl", "hookspec", "info", "list_backbones", "plugins_report", "register_plugin",
    "reload_plugins", "unregister_plugin", *_LAZY,
]
