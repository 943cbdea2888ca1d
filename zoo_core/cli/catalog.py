"""``zoo plugins``, ``zoo list``, ``zoo info`` and ``zoo cache``: what is installed and what is stored."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..outputs.tables import format_pairs, format_table, human_count, input_sizes_text, stage_size_pairs
from .common import Subparsers, json_flag, print_json


# ---- zoo plugins ---------------------------------------------------------------------------------
def add_plugins(sub: Subparsers) -> None:
    p = sub.add_parser("plugins", help="list installed plugins, their backbones and load errors")
    json_flag(p, "print JSON instead of a table")
    p.set_defaults(func=_cmd_plugins)


def _cmd_plugins(args: argparse.Namespace) -> int:
    from ..backbones.registry import plugins_report, selection_note

    rows = [r.to_dict() for r in plugins_report()]
    if args.json:
        print_json(rows)
    else:
        print(format_table(rows, ["name", "distribution", "version", "hooks", "backbones", "error"]))
    note = selection_note()
    if note:
        print(f"note: {note}", file=sys.stderr)
    return 0


# ---- zoo list ------------------------------------------------------------------------------------
def add_list(sub: Subparsers) -> None:
    p = sub.add_parser("list", help="list backbone names (glob PATTERN, e.g. 'resnet*' or 'timm/vit_*')")
    p.add_argument("pattern", nargs="?", default=None, metavar="PATTERN", help="case-insensitive glob")
    p.add_argument("--family", "-f", default=None, help="only this family or plugin (resnet, vgg, timm, …)")
    p.add_argument("--pretrained", action="store_true", help="only backbones with pretrained weights (upstream; "
                   "the weights_now column says whether they load now: available = cached or installed, download "
                   "= needs the network)")
    p.add_argument("--feature-dim", type=int, default=None, metavar="D",
                   help="only backbones whose pooled features have D dimensions (builds each remaining model on "
                        "the meta device, ~0.1 s a name: narrow with PATTERN/--family first)")
    json_flag(p, "print JSON instead of a table")
    p.set_defaults(func=_cmd_list)


def _list_row(name: str) -> dict[str, Any]:
    """One ``zoo list`` row; a name several plugins register shows every owner and an ``error``."""
    from ..backbones.models import weights_status
    from ..backbones.registry import conflict_message, owners

    claims = owners(name)
    row: dict[str, Any] = {"name": name, "family": ", ".join(dict.fromkeys(a.family for a, _ in claims)),
                           "plugin": ", ".join(dict.fromkeys(p for _, p in claims)),
                           "pretrained": any(a.has_pretrained(name) for a, _ in claims)}
    row["weights_now"] = weights_status(name) if row["pretrained"] else "none"
    conflict = conflict_message(name)
    if conflict:
        row["error"] = conflict
    return row


def _cmd_list(args: argparse.Namespace) -> int:
    from ..backbones.registry import list_backbones

    rows = [_list_row(n) for n in list_backbones(args.pattern, pretrained=args.pretrained, family=args.family,
                                                 feature_dim=args.feature_dim)]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no backbones match; try `zoo list` without filters", file=sys.stderr)
        return 0
    conflicts = [r for r in rows if "error" in r]
    for r in conflicts:
        r["family"] += " (!)"  # explained below the table
    print(format_table(rows, ["name", "family", "pretrained", "weights_now"]))
    print(f"{len(rows)} backbone(s)", file=sys.stderr)
    for r in conflicts:
        print(f"zoo: warning: {r['error']}", file=sys.stderr)
    return 0


# ---- zoo info ------------------------------------------------------------------------------------
def add_info(sub: Subparsers) -> None:
    p = sub.add_parser("info", help="describe one backbone: size, features, preprocessing, stages, weights")
    p.add_argument("name", metavar="NAME", help="backbone name, e.g. resnet18 or timm/efficientnet_b0")
    json_flag(p, "print JSON instead of key/value lines")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from ..backbones.models import info
    from ..backbones.registry import plugins_report

    bi = info(args.name)
    record = next((r for r in plugins_report() if r.name == bi.plugin), None)
    dist = f"{record.distribution} {record.version}" if record and record.distribution else None
    dc = bi.data_config
    if args.json:
        print_json({**bi.to_dict(), "distribution": record.distribution if record else None,
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
        ("accepted sizes", input_sizes_text(**bi.input_sizes.to_dict())),
        ("resize", f"{dc.resize_size}, then center crop {h}x{w} (crop_pct {dc.crop_pct:g})"),
        ("interpolation", dc.interpolation),
        ("mean", ", ".join(f"{m:.4g}" for m in dc.mean)),
        ("std", ", ".join(f"{s:.4g}" for s in dc.std)),
        ("stages", f"{', '.join(bi.stages)} ({len(bi.stages)})"),
        *stage_size_pairs(bi.stage_sizes, bi.head_params, bi.num_params),
        ("weights", ", ".join(f"{w} (default)" if w == bi.default_weights else w for w in bi.weights)
         or "none (random init only)"),
        ("weights now", {True: "available (cached or installed)", False: "download needed" if bi.weights else "none",
                         None: "unknown (the plugin cannot tell)"}[bi.weights_available]),
    ]
    for key, value in bi.extra.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        pairs.append((str(key), value))
    print(format_pairs(pairs))
    return 0



# ---- zoo cache -----------------------------------------------------------------------------------
def add_cache(sub: Subparsers) -> None:
    p = sub.add_parser("cache", help="show or clear the feature / decoded-image / ONNX export cache")
    p.add_argument("action", choices=["info", "clear"], help="info: list entries; clear: delete them")
    p.add_argument("what", nargs="?", choices=["features", "pixels", "onnx", "all"], default=None, metavar="KIND",
                   help="features, pixels, onnx or all (default all); same as --kind")
    p.add_argument("--kind", choices=["features", "pixels", "onnx", "all"], default="all")
    json_flag(p)
    p.set_defaults(func=_cmd_cache)


def _cmd_cache(args: argparse.Namespace) -> int:
    from ..cache import cache_root, cache_summary, clear_cache

    args.kind = args.what or args.kind
    if args.action == "clear":
        freed = clear_cache(args.kind)
        print(f"freed {freed / 2**20:.1f} MiB from {cache_root()}")
        return 0
    entries = [e for e in cache_summary() if args.kind == "all" or e.get("kind") == args.kind]
    if args.json:
        print_json(entries)
    else:
        cols = ("kind", "backbone", "split", "n", "dim", "image_size", "size_bytes", "status", "created")
        print(format_table(entries, [c for c in cols if any(e.get(c) is not None for e in entries)])
              if entries else "cache is empty")
        print(f"cache root: {cache_root()} (clear with `zoo cache clear`)", file=sys.stderr)
    return 0


