"""The ``zoo`` CLI: plugins, list and info in text and JSON; errors as one line and exit status 2."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys

from helpers_cli import run

from zoo_core import cli
from zoo_core.outputs.tables import format_pairs, format_table, format_value, human_count


def test_console_script_is_declared() -> None:
    (ep,) = [e for e in md.entry_points(group="console_scripts") if e.name == "zoo"]
    assert ep.value == "zoo_core.cli:main" and ep.load() is cli.main


def test_plugins_table(capsys) -> None:
    code, out, _ = run(capsys, "plugins")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "HOOKS", "BACKBONES", "ERROR"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["resnet"][:4] == ["resnet", "zoo-resnet", "0.1.0", "register_backbones"]
    assert rows["vgg"][1] == "zoo-vgg" and rows["vgg"][4] == "8"
    assert rows["timm"][1] == "zoo-timm" and int(rows["timm"][4]) > 1000


def test_plugins_json(capsys) -> None:
    code, out, _ = run(capsys, "plugins", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["vgg"] == {"name": "vgg", "distribution": "zoo-vgg", "version": "0.1.0",
                           "hooks": ["register_backbones"], "backbones": 8, "error": None}
    assert {"resnet", "timm"} <= set(rows)


def test_plugins_notes_the_env_var(capsys, plugins_env) -> None:
    plugins_env("vgg")
    code, out, err = run(capsys, "plugins", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["vgg"]
    assert "BACKBONE_ZOO_PLUGINS='vgg'" in err


def test_list_text_and_json(capsys) -> None:
    code, out, err = run(capsys, "list", "resnet1*")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "FAMILY", "PRETRAINED", "WEIGHTS_NOW"]
    assert [line.split() for line in lines[2:]] == [  # upstream, not in the (empty) cache
        ["resnet101", "resnet", "yes", "download"], ["resnet152", "resnet", "yes", "download"],
        ["resnet18", "resnet", "yes", "download"]]
    assert "3 backbone(s)" in err

    code, out, _ = run(capsys, "list", "--family", "vgg", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 8
    assert rows[0] == {"name": "vgg11", "family": "vgg", "plugin": "vgg", "pretrained": True, "weights_now": "download"}


def test_list_pretrained_filter(capsys) -> None:
    _, out, _ = run(capsys, "list", "timm/test_*", "--json")
    _, out_pre, _ = run(capsys, "list", "timm/test_*", "--pretrained", "--json")
    every, pre = json.loads(out), json.loads(out_pre)
    assert pre and len(pre) < len(every) and all(r["pretrained"] for r in pre)
    assert {r["name"] for r in every if r["pretrained"]} == {r["name"] for r in pre}


def test_list_without_match_and_with_unknown_family(capsys) -> None:
    code, out, err = run(capsys, "list", "nothing_like_this*")
    assert (code, out) == (0, "") and "no backbones match" in err
    code, out, err = run(capsys, "list", "--family", "alexnet")
    assert code == 2 and out == ""
    assert err.strip() == ("zoo: error: unknown family 'alexnet'. Did you mean: resnet? Known families and plugins: "
                           "efficientnet_lite, effnet_lite, resnet, timm, vgg")


def test_info_text(capsys) -> None:
    code, out, _ = run(capsys, "info", "resnet18")
    assert code == 0
    fields = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines())
    assert fields["name"] == "resnet18" and fields["plugin"] == "resnet (zoo-resnet 0.1.0)"
    assert fields["parameters"] == "11,689,512 (11.7M)"
    assert fields["feature dim"] == "512" and fields["head"] == "fc"
    assert fields["input size"] == "3x224x224" and fields["interpolation"] == "bilinear"
    assert fields["resize"].startswith("256, then center crop 224x224")
    assert fields["mean"] == "0.485, 0.456, 0.406" and fields["std"] == "0.229, 0.224, 0.225"
    assert fields["stages"] == "stem, layer1, layer2, layer3, layer4 (5)"
    assert fields["weights"] == "IMAGENET1K_V1 (default)"


def test_info_json(capsys) -> None:
    code, out, _ = run(capsys, "info", "vgg11", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["feature_dim"] == 4096 and d["head"] == "classifier.6" and d["distribution"] == "zoo-vgg"
    assert d["stages"] == ["block1", "block2", "block3", "block4", "block5", "fc6", "fc7"]
    assert d["data_config"]["input_size"] == [3, 224, 224] and d["resize_size"] == 256
    assert d["default_weights"] == "IMAGENET1K_V1"


def test_info_timm(capsys) -> None:
    code, out, _ = run(capsys, "info", "timm/test_vit")
    assert code == 0
    assert "3x160x160" in out and "bicubic" in out and "r160_in1k (default)" in out


def test_unknown_name_is_one_line_on_stderr_and_exit_2(capsys) -> None:
    code, out, err = run(capsys, "info", "resnet19")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("zoo: error: Unknown backbone 'resnet19'.")
    assert "resnet18" in err and "Traceback" not in err


def test_usage_errors_exit_2(capsys) -> None:
    assert run(capsys, "no-such-command")[0] == 2
    assert run(capsys)[0] == 2
    code, out, _ = run(capsys, "--help")
    assert code == 0 and all(cmd in out for cmd in ("plugins", "list", "info"))


def test_train_help_and_readme_list_every_builtin_dataset(capsys) -> None:
    from pathlib import Path

    from zoo_core.data import dataset_names

    code, out, _ = run(capsys, "train", "--help")
    help_text = " ".join(out.split())
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert code == 0
    for name in dataset_names():
        assert name in help_text, f"zoo train --help does not list {name}"
        assert f"`{name}`" in readme, f"README does not list {name}"


def test_process_exit_status_and_no_traceback() -> None:
    env = {**os.environ, "BACKBONE_ZOO_PLUGINS": "resnet"}
    proc = subprocess.run([sys.executable, "-m", "zoo_core.cli", "info", "vgg16"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("zoo: error: Unknown backbone 'vgg16'") and "Traceback" not in proc.stderr


# ---- table helpers ----------------------------------------------------------------------------
def test_format_table_aligns_and_formats() -> None:
    rows = [{"name": "resnet18", "n": 10, "tags": ["a", "b"], "err": None},
            {"name": "vgg", "n": 3197, "tags": [], "err": "boom\nline 2"}]
    text = format_table(rows, ["name", ("n", "#"), "tags", "err"])
    assert text.splitlines() == [
        "NAME         #  TAGS  ERR",
        "--------  ----  ----  -----------",
        "resnet18    10  a, b",
        "vgg       3197        boom line 2",
    ]
    assert format_table([], ["name"]) == "NAME\n----"
    assert format_value(True) == "yes" and format_value(0.123456) == "0.1235"


def test_format_pairs_and_human_count() -> None:
    assert format_pairs([("name", "x"), ("feature dim", 512)]) == "name         x\nfeature dim  512"
    assert human_count(11_689_512) == "11.7M" and human_count(371_240) == "371.2K" and human_count(12) == "12"
