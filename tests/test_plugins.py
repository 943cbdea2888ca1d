"""Plugin discovery and isolation: entry points, BACKBONE_ZOO_PLUGINS, third-party and broken plugins,
duplicates, and the hook spec itself."""

from __future__ import annotations

import ast
import importlib.metadata as md
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest
from helpers_cli import run, run_json
from torch import nn

import zoo_core
import zoo_core.plugin_kit
from zoo_core import cli, hookimpl
from zoo_core.backbones import hookspecs
from zoo_core.backbones.registry import REGISTRY, BackboneRegistry, get_plugin_manager
from zoo_core.errors import DuplicateBackboneError, UnknownBackboneError
from zoo_core.testing import check_adapter

BUILTINS = {"resnet": "zoo-resnet", "vgg": "zoo-vgg", "timm": "zoo-timm"}

# A complete third-party plugin, as another project would ship it: one module, one adapter.
TOY_PLUGIN = '''
from torch import nn

from zoo_core.plugin_kit import BackboneAdapter, freeze_stages, hookimpl, replace_linear_head


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


def _report() -> dict[str, zoo_core.backbones.manager.PluginRecord]:
    return {r.name: r for r in zoo_core.plugins_report()}


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

    rows = {r["name"]: r for r in run_json(capsys, "plugins", "--json")}
    assert rows["toy"] == {"name": "toy", "distribution": "toy-zoo-plugin", "version": "1.2.3",
                           "hooks": ["register_backbones"], "backbones": 2, "error": None}
    assert set(rows) >= set(BUILTINS)
    listed = run_json(capsys, "list", "toy*", "--json")
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
        "bad_exit": "import sys\n\nsys.exit(3)\n",
        "bad_hook_exit": "import sys\nfrom zoo_core import hookimpl\n\n@hookimpl\ndef register_backbones(register):\n"
                         "    sys.exit('bye')\n",
        "bad_missing_dep": "import zoo_no_such_dependency  # noqa\n",
    }
    install_dist("broken-plugins", "0.0.1", {n: n for n in broken}, broken)
    install_dist("toy-zoo-plugin", "1.2.3", {"toy": "toy_zoo_plugin"}, {"toy_zoo_plugin": TOY_PLUGIN})

    report = _report()
    expected = {  # the error, and the plugin's own line it points at (never a zoo_core/pluggy/importlib frame)
        "bad_import": ("RuntimeError: boom at import", "bad_import.py:1"),
        "bad_hook": ("ValueError: boom in hook", "bad_hook.py:5"),
        "bad_adapter": ("is not a zoo_core.BackboneAdapter", "bad_adapter.py:5"),
        "bad_name": ("unknown hook 'register_backbone'", "bad_name.py:3"),  # its @hookimpl line
        "bad_args": ("Argument(s) {'reg'} are declared in the hookimpl", "bad_args.py:3"),
        "bad_exit": ("called sys.exit(3)", "bad_exit.py:3"),
        "bad_hook_exit": ("called sys.exit('bye')", "bad_hook_exit.py:6"),
        "bad_missing_dep": ("No module named 'zoo_no_such_dependency'", "bad_missing_dep.py:1"),
    }
    for name, (needle, where) in expected.items():
        rec = report[name]
        assert rec.error and needle in rec.error, (name, rec.error)
        assert rec.error.endswith(f"{name}.py:{where.split(':')[1]})"), (name, rec.error)
        assert "\n" not in rec.error and f"zoo_core{os.sep}" not in rec.error and f"pluggy{os.sep}" not in rec.error
        assert rec.distribution == "broken-plugins" and not rec.backbones
    assert "did you mean 'register_backbones'?" in report["bad_name"].error
    for name in (*BUILTINS, "toy"):
        assert report[name].error is None, report[name].error
    assert zoo_core.create("toy_net", weights=None, num_classes=2).fc.out_features == 2
    assert zoo_core.create("resnet18", weights=None, num_classes=2).fc.out_features == 2

    rows = {r["name"]: r for r in run_json(capsys, "plugins", "--json")}
    assert "boom at import" in rows["bad_import"]["error"] and rows["toy"]["error"] is None
    capsys.readouterr()
    assert cli.main(["plugins"]) == 0
    table = capsys.readouterr().out
    assert "boom in hook" in table and "broken-plugins" in table


def test_a_plugin_calling_sys_exit_in_a_real_process_is_reported(install_dist, tmp_path) -> None:
    site = install_dist("exit-plugin", "0.1", {"quitter": "quitter_mod"}, {"quitter_mod": "import sys\nsys.exit(1)\n"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site.parent), os.environ.get("PYTHONPATH", "")])}
    code = ("import json, zoo_core; r = {p.name: p.error for p in zoo_core.plugins_report()}; "
            "print(json.dumps([r, zoo_core.create('resnet18', weights=None, num_classes=2).fc.out_features]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report, out_features = json.loads(proc.stdout)
    assert "called sys.exit(1)" in report["quitter"] and report["resnet"] is None and out_features == 2


def test_env_var_naming_no_installed_plugin_is_explained(plugins_env, capsys) -> None:
    plugins_env("nonexistent")
    with pytest.raises(UnknownBackboneError) as err:
        zoo_core.create("resnet18", weights=None)
    msg = str(err.value)
    assert "BACKBONE_ZOO_PLUGINS='nonexistent' names no installed plugin called 'nonexistent'" in msg
    assert "installed: " in msg and "resnet" in msg.split("installed: ")[1] and "\n" not in msg
    capsys.readouterr()
    assert cli.main(["plugins"]) == 0
    assert "names no installed plugin called 'nonexistent'" in capsys.readouterr().err
    plugins_env("zoo-vgg,nope")  # a right and a wrong name: only the wrong one is reported
    assert zoo_core.list_backbones("vgg11") == ["vgg11"]
    with pytest.raises(UnknownBackboneError, match=r"called 'nope' \(installed"):
        zoo_core.get_adapter("resnet18")


# A third-party plugin whose adapter also claims a built-in name.
DUP_PLUGIN = TOY_PLUGIN.replace('return ["toy_net", "toy_net_wide"]', 'return ["resnet18", "dup_net"]').replace(
    'family = "toy"', 'family = "dupfam"')


def test_a_real_plugin_duplicating_a_name_breaks_only_that_name(install_dist, capsys, tmp_path,
                                                                 skip_run_plots) -> None:
    site = install_dist("dup-zoo-plugin", "0.3", {"dupz": "dup_zoo_plugin"}, {"dup_zoo_plugin": DUP_PLUGIN})

    # listing keeps working: the name shows once, with both owners and the fix
    code, out, err = run(capsys, "list", "resnet1*")
    assert code == 0 and [line.split()[0] for line in out.splitlines()[2:]] == ["resnet101", "resnet152", "resnet18"]
    assert "zoo: warning: backbone 'resnet18' is registered by several plugins" in err
    others = sorted(r.name for r in zoo_core.plugins_report() if r.name not in ("dupz", "resnet") and not r.error)
    assert f"BACKBONE_ZOO_PLUGINS={','.join(sorted(['resnet', *others]))} keeps 'resnet'" in err
    assert "pip uninstall" in err
    rows = {r["name"]: r for r in run_json(capsys, "list", "--json")}
    assert rows["resnet18"]["plugin"] == "dupz, resnet" and rows["resnet18"]["family"] == "dupfam, resnet"
    assert "'dupz' (dup-zoo-plugin 0.3)" in rows["resnet18"]["error"] and "error" not in rows["resnet34"]
    assert "resnet18" in zoo_core.list_backbones(family="resnet")  # not dropped from its own family
    assert zoo_core.list_backbones(family="dupfam") == ["dup_net", "resnet18"]
    assert zoo_core.list_backbones("resnet18", pretrained=True) == ["resnet18"]
    rec = _report()
    assert "'resnet'" in rec["dupz"].error and "'dupz'" in rec["resnet"].error and rec["timm"].error is None

    # other names keep working; the conflicting one fails as one line naming both owners
    assert run(capsys, "info", "resnet34")[0] == 0
    code, out, err = run(capsys, "info", "resnet18")
    assert code == 2 and out == "" and err.count("\n") == 1 and "'dupz'" in err and "'resnet'" in err
    with pytest.raises(DuplicateBackboneError, match=f"BACKBONE_ZOO_PLUGINS={','.join(sorted(['dupz', *others]))} keeps 'dupz'"):
        zoo_core.create("resnet18", weights=None)
    assert zoo_core.create("dup_net", weights=None, num_classes=2).fc.out_features == 2

    # compare runs the rest and records the conflicting entry as failed
    from helpers_images import make_folder

    data = make_folder(tmp_path / "data", num_classes=2, per_class=6)
    code, out, err = run(capsys, "compare", "resnet18", "dup_net", "--data", str(data), "--weights", "none",
                          "--image-size", "32", "--out", str(tmp_path / "cmp"), "--json")
    assert code == 0, err
    entries = {r["backbone"]: r for r in json.loads(out)}
    assert entries["dup_net"]["status"] == "ok" and entries["resnet18"]["status"] == "failed"
    assert "DuplicateBackboneError" in entries["resnet18"]["error"] and "'dupz'" in entries["resnet18"]["error"]

    # and in a fresh process, through the console entry point
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "zoo_core.cli", "list"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0 and "resnet18" in proc.stdout and "Traceback" not in proc.stderr


# ---- in-process plugins: duplicates, validation ---------------------------------------------------
def test_duplicate_backbone_names_fail_loudly_naming_both_plugins(add_plugin) -> None:
    add_plugin(_plugin("dup_net", "resnet18"), name="plugin_a")
    add_plugin(_plugin("dup_net"), name="plugin_b")
    with pytest.raises(DuplicateBackboneError) as err:
        zoo_core.create("dup_net", weights=None)
    assert "'plugin_a'" in str(err.value) and "'plugin_b'" in str(err.value)
    assert "zoo_core.unregister_plugin('plugin_a')" in str(err.value)  # in-process: the env var cannot help
    with pytest.raises(DuplicateBackboneError) as err:
        zoo_core.get_adapter("resnet18")  # a plugin shadowing a built-in is a conflict too
    assert "'resnet'" in str(err.value) and "'plugin_a'" in str(err.value)
    report = _report()
    assert "dup_net" in report["plugin_b"].error and "plugin_a" in report["plugin_b"].error
    assert "resnet18" in report["resnet"].error and "plugin_a" in report["resnet"].error
    assert zoo_core.create("resnet34", weights=None, num_classes=2).fc.out_features == 2  # others fine
    assert zoo_core.list_backbones("dup_net") == ["dup_net"]  # listed once, not dropped

    class Twice:
        @hookimpl
        def register_backbones(self, register):
            register(_Fixed(["twice_net", "once_net"]))
            register(_Fixed(["twice_net"]))

    add_plugin(Twice(), name="twice")
    with pytest.raises(DuplicateBackboneError, match=r"'twice_net' is registered 2 times by plugin 'twice'"):
        zoo_core.get_adapter("twice_net")
    assert "registered by 2 of its adapters" in _report()["twice"].error
    assert zoo_core.get_adapter("once_net")[1] == "twice"


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
    with pytest.raises(pluggy.PluginValidationError, match=r"unknown hook 'register_backbone'.*did you mean "
                       r"'register_backbones'\? .*test_plugins\.py:\d+\)$"):
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


# ---- the registry object and the plugin kit -------------------------------------------------------------
def test_a_second_registry_keeps_its_own_plugins(add_plugin) -> None:
    other = BackboneRegistry()
    other.register_plugin(_plugin("solo_a", "solo_b"), name="solo")
    assert other.list_backbones("solo_*") == ["solo_a", "solo_b"] and other.get_adapter("solo_b")[1] == "solo"
    assert "resnet18" in other.list_backbones()  # it loaded the entry points itself
    assert zoo_core.list_backbones("solo_*") == []  # the default registry never saw it
    add_plugin(_plugin("solo_a"), name="default-solo")
    assert REGISTRY.owners("solo_a")[0][1] == "default-solo" and other.owners("solo_a")[0][1] == "solo"
    other.unregister_plugin("solo")
    assert other.list_backbones("solo_*") == [] and zoo_core.list_backbones("solo_*") == ["solo_a"]


def _zoo_core_imports(path: Path) -> list[str]:
    """Every zoo_core module ``path`` imports, at any level (function-level imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "zoo_core"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "zoo_core":
            found += [node.module] if node.module != "zoo_core" else [f"zoo_core.{a.name}" for a in node.names]
    return found


def test_builtin_plugins_import_only_the_plugin_kit() -> None:
    root = Path(__file__).resolve().parents[1] / "plugins"
    sources = sorted(root.glob("*/zoo_*/**/*.py"))
    imports = {p.relative_to(root).as_posix(): _zoo_core_imports(p) for p in sources}
    assert {p.split("/")[0] for p, found in imports.items() if found} == {"effnet_lite", "resnet", "timm", "vgg"}
    wrong = {p: [m for m in found if m != "zoo_core.plugin_kit"] for p, found in imports.items()}
    assert not {p: m for p, m in wrong.items() if m}, "plugins must import zoo_core only through zoo_core.plugin_kit"


def test_plugin_kit_documents_every_name() -> None:
    kit = zoo_core.plugin_kit
    doc = kit.__doc__ or ""
    for name in kit.__all__:
        assert hasattr(kit, name), f"plugin_kit.__all__ names {name!r}, which it does not define"
        assert f"* ``{name}`` — " in doc, f"the plugin_kit docstring has no line for {name!r}"
    public = {n for n in vars(kit) if not n.startswith("_")} - {"annotations"}  # annotations: from __future__
    assert public == set(kit.__all__), "every public name of the plugin kit is in __all__ and documented"
