"""Plugin discovery and isolation: entry points, BACKBONE_ZOO_PLUGINS, third-party and broken plugins,
duplicates, and the hook spec itself."""

from __future__ import annotations

import importlib.metadata as md
import inspect
import json

import pluggy
import pytest
from torch import nn

import zoo_core
from zoo_core import cli, hookimpl, hookspecs
from zoo_core.errors import DuplicateBackboneError, UnknownBackboneError
from zoo_core.plugins import get_plugin_manager
from zoo_core.testing import check_adapter

BUILTINS = {"resnet": "zoo-resnet", "vgg": "zoo-vgg", "timm": "zoo-timm"}

# A complete third-party plugin, as another project would ship it: one module, one adapter.
TOY_PLUGIN = '''
from torch import nn

from zoo_core import BackboneAdapter, hookimpl
from zoo_core.freezing import freeze_stages, replace_linear_head


class ToyNet(nn.Module):
    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                                   nn.BatchNorm2d(2 * width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.block(self.stem(x))).flatten(1))


class ToyAdapter(BackboneAdapter):
    family = "toy"

    def names(self):
        return ["toy_net", "toy_net_wide"]

    def create(self, name, *, weights=None, num_classes=1000):
        if weights is not None:
            raise ValueError("toy nets have no pretrained weights")
        return ToyNet(num_classes or 1000, width=16 if name.endswith("wide") else 8)

    def replace_head(self, model, num_classes):
        return replace_linear_head(model, "fc", num_classes)

    def freeze(self, model, trainable_stages=0):
        return freeze_stages(model, self.stages(model), "fc", trainable_stages)


@hookimpl
def register_backbones(register):
    register(ToyAdapter())
'''


def _report() -> dict[str, zoo_core.plugins.PluginRecord]:
    return {r.name: r for r in zoo_core.plugins_report()}


def _cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    capsys.readouterr()
    assert cli.main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


class _Fixed(zoo_core.BackboneAdapter):
    """An adapter over fixed names (for in-process test plugins); builds a tiny MLP."""

    family = "fixed"

    def __init__(self, names: list[str]) -> None:
        self._names = names

    def names(self) -> list[str]:
        return self._names

    def create(self, name: str, *, weights: str | None = None, num_classes: int | None = 1000) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, num_classes or 1000))


def _plugin(*names: str) -> object:
    class P:
        @hookimpl
        def register_backbones(self, register):
            register(_Fixed(list(names)))

    return P()


# ---- entry-point discovery -----------------------------------------------------------------------
def test_builtin_plugins_are_discovered_through_entry_points() -> None:
    eps = {ep.name: ep for ep in md.entry_points(group="backbone_zoo")}
    report = _report()
    for name, dist in BUILTINS.items():
        assert eps[name].value == f"zoo_{name}" and eps[name].dist.name == dist
        rec = report[name]
        assert (rec.distribution, rec.error) == (dist, None)
        assert rec.version == md.version(dist)
        assert rec.hooks == ["register_backbones"]
        assert rec.backbones, f"{name} registered no backbones"
    assert "resnet18" in report["resnet"].backbones and "vgg16_bn" in report["vgg"].backbones
    assert "timm/test_resnet" in report["timm"].backbones


def test_env_var_restricts_plugins(plugins_env) -> None:
    plugins_env("resnet")
    assert list(_report()) == ["resnet"]
    assert "resnet18" in zoo_core.list_backbones() and not zoo_core.list_backbones("vgg*")
    with pytest.raises(UnknownBackboneError, match="vgg11"):
        zoo_core.create("vgg11", weights=None)

    plugins_env(" zoo-vgg , resnet ")  # distribution names work too; blanks are ignored
    assert list(_report()) == ["resnet", "vgg"]

    plugins_env("")
    assert _report() == {} and zoo_core.list_backbones() == []

    plugins_env(None)
    assert set(_report()) >= set(BUILTINS)


# ---- a third-party plugin installed through a real entry point ----------------------------------
def test_third_party_plugin_through_real_entry_point(install_dist, capsys) -> None:
    info = install_dist("toy-zoo-plugin", "1.2.3", {"toy": "toy_zoo_plugin"}, {"toy_zoo_plugin": TOY_PLUGIN})
    ep = [e for e in md.entry_points(group="backbone_zoo") if e.name == "toy"]
    assert ep and ep[0].dist._path == info  # the temp distribution, not something on the real path

    assert zoo_core.list_backbones("toy*") == ["toy_net", "toy_net_wide"]
    assert zoo_core.list_backbones(family="toy") == ["toy_net", "toy_net_wide"]
    assert "resnet18" in zoo_core.list_backbones()  # the built-ins are still there
    model = zoo_core.create("toy_net", weights=None, num_classes=4)
    assert model.fc.out_features == 4
    check_adapter("toy_net")

    rows = {r["name"]: r for r in _cli_json(capsys, "plugins", "--json")}
    assert rows["toy"] == {"name": "toy", "distribution": "toy-zoo-plugin", "version": "1.2.3",
                           "hooks": ["register_backbones"], "backbones": 2, "error": None}
    assert set(rows) >= set(BUILTINS)
    listed = _cli_json(capsys, "list", "toy*", "--json")
    assert [r["name"] for r in listed] == ["toy_net", "toy_net_wide"] and listed[0]["plugin"] == "toy"


def test_broken_plugins_are_reported_and_do_not_break_others(install_dist, capsys) -> None:
    broken = {
        "bad_import": "raise RuntimeError('boom at import')\n",
        "bad_hook": "from zoo_core import hookimpl\n\n@hookimpl\ndef register_backbones(register):\n"
                    "    raise ValueError('boom in hook')\n",
        "bad_adapter": "from zoo_core import hookimpl\n\n@hookimpl\ndef register_backbones(register):\n"
                       "    register(object())\n",
        "bad_name": "from zoo_core import hookimpl\n\n@hookimpl\ndef register_backbone(register):\n"
                    "    pass\n",
        "bad_args": "from zoo_core import hookimpl\n\n@hookimpl\ndef register_backbones(reg):\n"
                    "    pass\n",
    }
    install_dist("broken-plugins", "0.0.1", {n: n for n in broken}, broken)
    install_dist("toy-zoo-plugin", "1.2.3", {"toy": "toy_zoo_plugin"}, {"toy_zoo_plugin": TOY_PLUGIN})

    report = _report()
    expected = {
        "bad_import": "RuntimeError: boom at import",
        "bad_hook": "ValueError: boom in hook",
        "bad_adapter": "is not a zoo_core.BackboneAdapter",
        "bad_name": "unknown hook 'register_backbone'",
        "bad_args": "Argument(s) {'reg'} are declared in the hookimpl",
    }
    for name, needle in expected.items():
        rec = report[name]
        assert rec.error and needle in rec.error, (name, rec.error)
        assert rec.distribution == "broken-plugins" and not rec.backbones
    for name in (*BUILTINS, "toy"):
        assert report[name].error is None, report[name].error
    assert zoo_core.create("toy_net", weights=None, num_classes=2).fc.out_features == 2
    assert zoo_core.create("resnet18", weights=None, num_classes=2).fc.out_features == 2

    rows = {r["name"]: r for r in _cli_json(capsys, "plugins", "--json")}
    assert "boom at import" in rows["bad_import"]["error"] and rows["toy"]["error"] is None
    capsys.readouterr()
    assert cli.main(["plugins"]) == 0
    table = capsys.readouterr().out
    assert "boom in hook" in table and "broken-plugins" in table


# ---- in-process plugins: duplicates, validation ---------------------------------------------------
def test_duplicate_backbone_names_fail_loudly_naming_both_plugins(add_plugin) -> None:
    add_plugin(_plugin("dup_net", "resnet18"), name="plugin_a")
    add_plugin(_plugin("dup_net"), name="plugin_b")
    with pytest.raises(DuplicateBackboneError) as err:
        zoo_core.create("dup_net", weights=None)
    assert "'plugin_a'" in str(err.value) and "'plugin_b'" in str(err.value)
    assert "BACKBONE_ZOO_PLUGINS" in str(err.value)
    with pytest.raises(DuplicateBackboneError) as err:
        zoo_core.get_adapter("resnet18")  # a plugin shadowing a built-in is a conflict too
    assert "'resnet'" in str(err.value) and "'plugin_a'" in str(err.value)
    report = _report()
    assert "dup_net" in report["plugin_b"].error and "plugin_a" in report["plugin_b"].error
    assert "resnet18" in report["resnet"].error and "plugin_a" in report["resnet"].error
    assert zoo_core.create("resnet34", weights=None, num_classes=2).fc.out_features == 2  # others fine


def test_register_and_unregister_plugin(add_plugin) -> None:
    assert "solo_net" not in zoo_core.list_backbones()
    add_plugin(_plugin("solo_net"), name="solo")
    assert zoo_core.list_backbones("solo*") == ["solo_net"]
    assert zoo_core.get_adapter("solo_net")[1] == "solo"
    assert _report()["solo"].distribution is None
    zoo_core.unregister_plugin("solo")
    assert zoo_core.list_backbones("solo*") == []


def test_check_pending_rejects_a_misspelt_hookimpl() -> None:
    class Misspelt:
        @hookimpl
        def register_backbone(self, register):  # missing "s"
            register(_Fixed(["never"]))

    plugin = Misspelt()
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'register_backbone'"):
        zoo_core.register_plugin(plugin, name="misspelt")
    assert not get_plugin_manager().is_registered(plugin)  # not left half-registered
    get_plugin_manager().check_pending()

    class WrongArg:
        @hookimpl
        def register_backbones(self, callback):
            pass

    with pytest.raises(pluggy.PluginValidationError, match=r"Argument\(s\) \{'callback'\}"):
        zoo_core.register_plugin(WrongArg(), name="wrong_arg")


# ---- the hook spec -----------------------------------------------------------------------------
def _hookspecs() -> dict[str, object]:
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {n: f for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, marker)}


def test_every_hookspec_is_documented_typed_and_tested() -> None:
    specs = _hookspecs()
    assert specs, "no hookspecs found"
    for name, fn in specs.items():
        doc = inspect.getdoc(fn) or ""
        assert doc, f"hookspec {name} has no docstring"
        for arg in inspect.signature(fn).parameters:
            assert f":param {arg}:" in doc, f"hookspec {name} does not document {arg}"
        assert ":returns:" in doc, f"hookspec {name} does not document its return"
        assert all(p.annotation is not inspect.Parameter.empty
                   for p in inspect.signature(fn).parameters.values()), f"hookspec {name} lacks type hints"
        assert f"test_hook_{name}" in globals(), f"hookspec {name} has no test_hook_{name} test"


def test_hook_register_backbones(add_plugin) -> None:
    calls = []

    class Two:
        @hookimpl
        def register_backbones(self, register):
            calls.append(register)
            register(_Fixed(["two_a"]))
            register(_Fixed(["two_b", "two_c"]))

    add_plugin(Two(), name="two")
    assert zoo_core.list_backbones("two_*") == ["two_a", "two_b", "two_c"]
    assert len(calls) == 1 and callable(calls[0])
    adapter, plugin = zoo_core.get_adapter("two_c")
    assert plugin == "two" and adapter.names() == ["two_b", "two_c"]
    assert zoo_core.create("two_c", weights=None, num_classes=3)[-1].out_features == 3
    zoo_core.list_backbones()
    assert len(calls) == 1  # the registry is built once, not per lookup
