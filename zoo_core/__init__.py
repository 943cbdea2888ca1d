"""backbone-zoo core: a plugin-based zoo of pretrained vision backbones for transfer learning.

Library API: :func:`list_backbones`, :func:`list_families`, :func:`create`, :func:`info`,
:func:`features`, :func:`transform`, :func:`train`, :func:`compare`, :func:`rank`, :func:`load`,
:func:`predict`, :func:`export`; plugin authors use :data:`hookimpl` and :class:`BackboneAdapter`.
The heavier names (training, comparison, …) are imported on first use, so ``import zoo_core`` stays fast;
``dir()``, ``help()`` and IDEs still see them.
"""

import typing as _typing

from .backbones.adapter import BackboneAdapter, BackboneInfo, DataConfig
from .backbones.hookspecs import hookimpl, hookspec
from .backbones.models import create, info
from .backbones.registry import (
    get_adapter,
    list_backbones,
    list_families,
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

if _typing.TYPE_CHECKING:  # what the lazy names below resolve to, for IDEs and type checkers
    from .comparison import Leaderboard, compare
    from .exporting import ExportResult, export
    from .feature_api import features, transform
    from .inference import load, predict
    from .logs import set_progress
    from .ranking import Ranking, rank
    from .training import TrainConfig, TrainResult, lr_find, train

__version__ = "0.1.0"

_LAZY_BY_MODULE = {  # heavy modules load on first use so `import zoo_core` stays fast
    "training": ("train", "TrainConfig", "TrainResult", "lr_find"),
    "inference": ("load", "predict"),
    "exporting": ("export", "ExportResult"),
    "comparison": ("compare", "Leaderboard"),
    "ranking": ("rank", "Ranking"),
    "feature_api": ("features", "transform"),
    "logs": ("set_progress",),
}
_LAZY = {name: (module, name) for module, names in _LAZY_BY_MODULE.items() for name in names}


def __getattr__(name: str) -> object:
    """Import a lazy public name (``train``, ``compare``, …) on first use."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zoo_core' has no attribute {name!r}")


__all__ = [
    "BackboneAdapter", "BackboneInfo", "DataConfig", "DataError", "DuplicateBackboneError",
    "TrainingError", "UnknownBackboneError", "WeightsError", "ZooError", "create", "get_adapter",
    "hookimpl", "hookspec", "info", "list_backbones", "list_families", "plugins_report", "register_plugin",
    "reload_plugins", "unregister_plugin",
    # imported on first use (_LAZY_BY_MODULE)
    "train", "TrainConfig", "TrainResult", "lr_find", "load", "predict", "export", "ExportResult", "compare",
    "Leaderboard", "rank", "Ranking", "features", "transform", "set_progress",
]


def __dir__() -> list[str]:
    """The public API (eager and lazy names) and the submodules already imported."""
    modules = [k for k, v in globals().items() if type(v) is type(_typing) and not k.startswith("_")]
    return sorted({*__all__, *modules, "__version__", "__doc__", "__name__", "__file__", "__path__"})
