"""Shared fixtures. Every test runs offline against empty, per-test caches (never the real home)."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator, Mapping

import pytest
import torch
from helpers_images import make_folder
from helpers_toys import KnownAdapter, plugin_of

import zoo_core
from zoo_core.backbones.manager import ENV_VAR
from zoo_core.cache.policy import PASS_ENV

# Tiny models on a shared 2-core box: intra-op threads cost more in spin-waiting than they save.
torch.set_num_threads(1)
# A developer's own plugin selection must not leak into the suite (set before any plugin loads).
os.environ.pop(ENV_VAR, None)

try:  # huggingface_hub reads HF_HOME/HF_HUB_CACHE/HF_HUB_OFFLINE once, at import: patch its constants too
    import huggingface_hub.constants as hf_constants
except ImportError:  # pragma: no cover - timm (and so huggingface_hub) is a dev dependency
    hf_constants = None


@pytest.fixture(autouse=True)
def zoo_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Point TORCH_HOME, HF_HOME (+ HF_HUB_CACHE), BACKBONE_ZOO_CACHE at fresh temp dirs; go offline.

    Returns the paths: ``torch_home``, ``hf_home``, ``hf_hub_cache``, ``zoo_cache``.
    """
    root = tmp_path_factory.mktemp("home")
    paths = SimpleNamespace(
        torch_home=root / "torch", hf_home=root / "huggingface", zoo_cache=root / "zoo-cache"
    )
    paths.hf_hub_cache = paths.hf_home / "hub"
    monkeypatch.setenv("TORCH_HOME", str(paths.torch_home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case anything called torch.hub.set_dir
    monkeypatch.setenv("HF_HOME", str(paths.hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(paths.hf_hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BACKBONE_ZOO_CACHE", str(paths.zoo_cache))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv(PASS_ENV, raising=False)  # a pinned extraction pass must not leak in either
    if hf_constants is not None:
        monkeypatch.setattr(hf_constants, "HF_HOME", str(paths.hf_home))
        monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(paths.hf_hub_cache))
        monkeypatch.setattr(hf_constants, "HUGGINGFACE_HUB_CACHE", str(paths.hf_hub_cache))
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return paths


@pytest.fixture
def plugins_env() -> Iterator[Callable[[str | None], None]]:
    """Set ``BACKBONE_ZOO_PLUGINS`` (``None`` unsets it) and reload plugins; restored in ``finally``."""
    old = os.environ.get(ENV_VAR)

    def set_plugins(value: str | None) -> None:
        if value is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = value
        zoo_core.reload_plugins()

    try:
        yield set_plugins
    finally:
        if old is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = old
        zoo_core.reload_plugins()


@pytest.fixture
def add_plugin() -> Iterator[Callable[..., str]]:
    """``add_plugin(obj, name=None)`` registers an in-process plugin; all are unregistered in ``finally``."""
    added: list[str] = []

    def add(plugin: object, name: str | None = None) -> str:
        added.append(zoo_core.register_plugin(plugin, name=name))
        return added[-1]

    try:
        yield add
    finally:
        for name in reversed(added):
            zoo_core.unregister_plugin(name)


@pytest.fixture
def install_dist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Path]]:
    """Install a throw-away distribution through a real ``backbone_zoo`` entry point.

    ``install_dist(dist, version, entry_points={"toy": "toy_mod"}, modules={"toy_mod": source})``
    writes ``<dist>-<version>.dist-info/`` (METADATA + entry_points.txt) and the modules into a temp
    dir on ``sys.path``, then reloads the plugins. Undone (modules, path, plugins) in ``finally``.
    """
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules_written: list[str] = []

    def install(dist: str, version: str, entry_points: Mapping[str, str], modules: Mapping[str, str]) -> Path:
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[backbone_zoo]\n{lines}")
        for mod, source in modules.items():
            (site / f"{mod}.py").write_text(textwrap.dedent(source))
            modules_written.append(mod)
        zoo_core.reload_plugins()
        return info

    try:
        yield install
    finally:
        for mod in modules_written:
            sys.modules.pop(mod, None)
        zoo_core.reload_plugins()  # lazy: the next use re-reads entry points after sys.path is restored


@pytest.fixture
def skip_run_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip each run's own curves/confusion/top-losses PNGs (slow to draw; tests/test_trainer.py and
    tests/test_mistakes.py cover them)."""
    import zoo_core.outputs.plots

    monkeypatch.setattr(zoo_core.outputs.plots, "learning_curves", lambda *a, **k: None)
    monkeypatch.setattr(zoo_core.outputs.plots, "confusion_matrix", lambda *a, **k: None)
    monkeypatch.setattr(zoo_core.outputs.plots, "top_losses", lambda *a, **k: None)


@pytest.fixture(scope="module")
def data3(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """An image folder of 3 easy classes of 40 px images, one per test module: 14 images a class (33 train /
    9 val with the default split), or the module's ``DATA3_PER_CLASS``."""
    per_class = getattr(request.module, "DATA3_PER_CLASS", 14)
    return make_folder(tmp_path_factory.mktemp("data3"), num_classes=3, per_class=per_class)


@pytest.fixture
def toys(add_plugin: Callable[..., str]) -> None:
    """Register the ``ranktoy`` plugin: backbones whose features are of known quality (helpers_toys)."""
    add_plugin(plugin_of(KnownAdapter()), name="ranktoy")
