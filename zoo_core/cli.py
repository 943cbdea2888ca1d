"""The ``zoo`` command line: a thin argparse layer over the library.

Each command is a pair ``_add_<cmd>(subparsers)`` (declares its arguments and sets ``func``) and
``_cmd_<cmd>(args) -> int`` (calls the library and prints). Add a command by writing both and
listing ``_add_<cmd>`` in :data:`_COMMANDS`. A :class:`zoo_core.ZooError` becomes one line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

from . import __version__
from .errors import ZooError
from .tables import format_pairs, format_table, human_count

Subparsers = Any  # argparse's _SubParsersAction (private type)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ---- zoo plugins ---------------------------------------------------------------------------------
def _add_plugins(sub: Subparsers) -> None:
    p = sub.add_parser("plugins", help="list installed plugins, their backbones and load errors")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_plugins)


def _cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import ENV_VAR
    from .registry import plugins_report

    rows = [r.to_dict() for r in plugins_report()]
    if args.json:
        _print_json(rows)
    else:
        print(format_table(rows, ["name", "distribution", "version", "hooks", "backbones", "error"]))
    if os.environ.get(ENV_VAR) is not None:
        print(f"note: {ENV_VAR}={os.environ[ENV_VAR]!r} limits which plugins load", file=sys.stderr)
    return 0


# ---- zoo list ------------------------------------------------------------------------------------
def _add_list(sub: Subparsers) -> None:
    p = sub.add_parser("list", help="list backbone names (glob PATTERN, e.g. 'resnet*' or 'timm/vit_*')")
    p.add_argument("pattern", nargs="?", default=None, metavar="PATTERN", help="case-insensitive glob")
    p.add_argument("--family", "-f", default=None, help="only this family or plugin (resnet, vgg, timm, …)")
    p.add_argument("--pretrained", action="store_true", help="only backbones with pretrained weights")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args: argparse.Namespace) -> int:
    from .registry import families, get_adapter, list_backbones, plugins_report

    if args.family and args.family not in families() + [r.name for r in plugins_report()]:
        raise ZooError(f"unknown family {args.family!r}; choose one of: {', '.join(families())}")
    names = list_backbones(args.pattern, pretrained=args.pretrained, family=args.family)
    rows = []
    for name in names:
        adapter, plugin = get_adapter(name)
        rows.append({"name": name, "family": adapter.family, "plugin": plugin,
                     "pretrained": adapter.has_pretrained(name)})
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no backbones match; try `zoo list` without filters", file=sys.stderr)
        return 0
    print(format_table(rows, ["name", "family", "pretrained"]))
    print(f"{len(rows)} backbone(s)", file=sys.stderr)
    return 0


# ---- zoo info ------------------------------------------------------------------------------------
def _add_info(sub: Subparsers) -> None:
    p = sub.add_parser("info", help="describe one backbone: size, features, preprocessing, stages, weights")
    p.add_argument("name", metavar="NAME", help="backbone name, e.g. resnet18 or timm/efficientnet_b0")
    p.add_argument("--json", action="store_true", help="print JSON instead of key/value lines")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from .models import info
    from .registry import plugins_report

    bi = info(args.name)
    record = next((r for r in plugins_report() if r.name == bi.plugin), None)
    dist = f"{record.distribution} {record.version}" if record and record.distribution else None
    dc = bi.data_config
    if args.json:
        _print_json({**bi.to_dict(), "distribution": record.distribution if record else None,
                     "resize_size": dc.resize_size})
        return 0
    c, h, w = dc.input_size
    pairs: list[tuple[str, Any]] = [
        ("name", bi.name),
        ("family", bi.family),
        ("plugin", f"{bi.plugin} ({dist})" if dist else bi.plugin),
        ("parameters", f"{bi.num_params:,} ({human_count(bi.num_params)})"),
        ("feature dim", bi.feature_dim),
        ("head", bi.head),
        ("input size", f"{c}x{h}x{w}"),
        ("resize", f"{dc.resize_size}, then center crop {h}x{w} (crop_pct {dc.crop_pct:g})"),
        ("interpolation", dc.interpolation),
        ("mean", ", ".join(f"{m:.4g}" for m in dc.mean)),
        ("std", ", ".join(f"{s:.4g}" for s in dc.std)),
        ("stages", f"{', '.join(bi.stages)} ({len(bi.stages)})"),
        ("weights", ", ".join(f"{w} (default)" if w == bi.default_weights else w for w in bi.weights)
         or "none (random init only)"),
    ]
    for key, value in bi.extra.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        pairs.append((str(key), value))
    print(format_pairs(pairs))
    return 0


# ---- wiring --------------------------------------------------------------------------------------
_COMMANDS: list[Callable[[Subparsers], None]] = [_add_plugins, _add_list, _add_info]
"""Every subcommand's ``_add_<cmd>``, in ``zoo --help`` order."""


def build_parser() -> argparse.ArgumentParser:
    """The ``zoo`` argument parser with every command in :data:`_COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="zoo", description="backbone-zoo: pretrained vision backbones for transfer learning"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``zoo`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return int(args.func(args) or 0)
    except ZooError as exc:
        print(f"zoo: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zoo list | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
