"""The ``zoo`` command line: a thin argparse layer over the library.

Each command is a pair ``_add_<cmd>(subparsers)`` (declares its arguments and sets ``func``) and
``_cmd_<cmd>(args) -> int`` (calls the library and prints). Add a command by writing both and
listing ``_add_<cmd>`` in :data:`_COMMANDS`. A :class:`zoo_core.ZooError` becomes one line on stderr
and exit status 2, and so does a usage error (an unknown option, ``--epochs abc``); the library checks the
option values (:func:`zoo_core.training.config.validate`), so the CLI and Python callers get the same line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, NoReturn

from . import __version__
from .errors import ZooError
from .outputs.tables import format_pairs, format_table, human_count, input_sizes_text, stage_size_pairs

Subparsers = Any  # argparse's _SubParsersAction (private type)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _json_flag(p: argparse.ArgumentParser, help: str = "print JSON") -> None:
    """The ``--json`` flag every command that prints results has."""
    p.add_argument("--json", action="store_true", help=help)


# ---- zoo plugins ---------------------------------------------------------------------------------
def _add_plugins(sub: Subparsers) -> None:
    p = sub.add_parser("plugins", help="list installed plugins, their backbones and load errors")
    _json_flag(p, "print JSON instead of a table")
    p.set_defaults(func=_cmd_plugins)


def _cmd_plugins(args: argparse.Namespace) -> int:
    from .backbones.registry import plugins_report, selection_note

    rows = [r.to_dict() for r in plugins_report()]
    if args.json:
        _print_json(rows)
    else:
        print(format_table(rows, ["name", "distribution", "version", "hooks", "backbones", "error"]))
    note = selection_note()
    if note:
        print(f"note: {note}", file=sys.stderr)
    return 0


# ---- zoo list ------------------------------------------------------------------------------------
def _add_list(sub: Subparsers) -> None:
    p = sub.add_parser("list", help="list backbone names (glob PATTERN, e.g. 'resnet*' or 'timm/vit_*')")
    p.add_argument("pattern", nargs="?", default=None, metavar="PATTERN", help="case-insensitive glob")
    p.add_argument("--family", "-f", default=None, help="only this family or plugin (resnet, vgg, timm, …)")
    p.add_argument("--pretrained", action="store_true", help="only backbones with pretrained weights (upstream; "
                   "the weights_now column says whether they load now: available = cached or installed, download "
                   "= needs the network)")
    _json_flag(p, "print JSON instead of a table")
    p.set_defaults(func=_cmd_list)


def _list_row(name: str) -> dict[str, Any]:
    """One ``zoo list`` row; a name several plugins register shows every owner and an ``error``."""
    from .backbones.models import weights_status
    from .backbones.registry import conflict_message, owners

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
    from .backbones.registry import families, list_backbones, plugins_report

    if args.family and args.family not in families() + [r.name for r in plugins_report()]:
        raise ZooError(f"unknown family {args.family!r}; choose one of: {', '.join(families())}")
    rows = [_list_row(n) for n in list_backbones(args.pattern, pretrained=args.pretrained, family=args.family)]
    if args.json:
        _print_json(rows)
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
def _add_info(sub: Subparsers) -> None:
    p = sub.add_parser("info", help="describe one backbone: size, features, preprocessing, stages, weights")
    p.add_argument("name", metavar="NAME", help="backbone name, e.g. resnet18 or timm/efficientnet_b0")
    _json_flag(p, "print JSON instead of key/value lines")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from .backbones.models import info
    from .backbones.registry import plugins_report

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


# ---- shared training options (generated from TrainConfig, so the CLI never drifts from the API) ---------
_TRAIN_HELP = {
    "strategy": "feature-extraction | finetune | full | gradual (default: feature-extraction)",
    "epochs": "epochs (default: converged head fit for feature-extraction, else 5)",
    "batch_size": "global batch size (default 32)",
    "lr": "head learning rate, or 'auto' for the LR range test (default 1e-3 AdamW)",
    "backbone_lr_mult": "backbone LR as a fraction of the head's (default 0.1)",
    "layer_decay": "extra LR factor per stage further from the head (default 0.7)",
    "weight_decay": "weight decay, never on norms and biases (default 0.05)",
    "optimizer": "adamw | sgd", "momentum": "SGD momentum", "warmup_epochs": "linear warm-up length",
    "label_smoothing": "label smoothing (default 0)",
    "trainable_stages": "stages that train with --strategy finetune: 0 to the backbone's stage count (default 1)",
    "head_epochs": "head-only epochs before unfreezing with --strategy gradual, fewer than --epochs (default 1)",
    "augment": "training augmentation: auto (default when fine-tuning: random resized crop and flip, each kept only "
               "if the linear probe shows it preserves this data's labels, a failed crop retried as mild-crop), bare "
               "--augment for crop + flip unchecked, or crop | mild-crop | flip | crop,flip | none; --no-augment "
               "for none",
    "head_init": "probe (default: fine-tuning starts from the converged linear probe's head, LP-FT) | random",
    "bn_stats": "BatchNorm running statistics while backbone layers train: auto (default: frozen when starting from "
                "the probe, updated from a random head) | frozen | update",
    "weights": "DEFAULT (pretrained), none (random init), a weight tag, or a .pth/.safetensors file",
    "image_size": "override the backbone's input size in pixels (e.g. 64 for a quick look)",
    "val_fraction": "validation share when the data has no val/ folder (default 0.2)",
    "seed": "random seed (default 0)", "device": "auto | cpu | cuda | cuda:1 | mps",
    "precision": "auto | fp32 | bf16 | fp16", "channels_last": "channels-last memory format",
    "num_workers": "data-loader workers (default: tuned to the machine)",
    "early_stopping": "patience in epochs on validation loss, 0 disables (default auto: 3 without --epochs, "
                      "within the 5-epoch budget; 5 with --epochs)",
    "cache_features": "cache frozen-backbone features on disk (default on)",
    "share_decoding": "decode each split once into the pixel cache, reused by runs of the same input size",
    "download": "download a built-in dataset (cifar10, …) if missing",
    "data_root": "where built-in datasets live (default $BACKBONE_ZOO_DATA or ~/.cache/backbone-zoo/datasets)",
    "out_dir": "parent folder of run directories (default runs)", "run_name": "run directory name",
    "max_steps": "stop each epoch after this many steps (smoke tests)",
    "log": "tensorboard: also log scalars, the LR schedule, the confusion matrix and hparams to TensorBoard "
           "(pip install tensorboard)",
    "log_dir": "with --log: TensorBoard runs go to LOG_DIR/<run name> (default RUN_DIR/tensorboard)",
}
_NOT_OPTIONS = {"backbone", "data", "progress"}


def _parse_weights(v: str) -> str | None:
    return None if v.lower() in ("none", "random") else v


def _or_auto(kind: type, flag: str, what: str) -> Any:
    """An argparse type: ``auto`` as it is, else ``kind(value)`` (a one-line error naming ``flag``)."""
    def parse(v: str) -> Any:
        if v == "auto":
            return v
        try:
            return kind(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes {what} or 'auto', not {v!r}") from None
    return parse


_parse_lr = _or_auto(float, "--lr", "a number")
_parse_patience = _or_auto(int, "--early-stopping", "an integer")


def _add_augment(p: argparse.ArgumentParser) -> None:
    """``--augment [POLICY]`` (bare: crop + flip, unchecked) and ``--no-augment`` (none), one destination."""
    from .augment import AUGMENTATIONS

    p.add_argument("--augment", dest="augment", nargs="?", const=True, default=None, metavar="POLICY",
                   help=_TRAIN_HELP["augment"])
    p.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                   help=f"train without augmentation (no {', '.join(AUGMENTATIONS)})")


def _add_train_options(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One ``--option`` per TrainConfig field (defaults stay the config's: None means 'not given')."""
    import dataclasses

    from .training import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        if f.name in _NOT_OPTIONS or f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": _TRAIN_HELP.get(f.name)}
        if f.name == "augment":
            _add_augment(p)
            continue
        if f.name == "weights":
            kwargs["type"] = _parse_weights
        elif f.name == "lr":
            kwargs["type"] = _parse_lr
        elif f.name == "early_stopping":
            kwargs["type"] = _parse_patience
        elif kind.startswith("bool"):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind.startswith("int"):
            kwargs["type"] = int
        elif kind.startswith("float"):
            kwargs["type"] = float
        p.add_argument(flag, **kwargs)


def _train_overrides(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    import dataclasses

    from .training import TrainConfig

    out = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in _NOT_OPTIONS or f.name in skip:
            continue
        v = getattr(args, f.name, None)
        if v is not None or (f.name == "weights" and getattr(args, "_weights_given", False)):
            out[f.name] = v
    if out.get("early_stopping") == 0:
        out["early_stopping"] = None
    return out


def _weights_given(argv: list[str]) -> bool:
    return any(a == "--weights" or a.startswith("--weights=") for a in argv)


# ---- zoo train -----------------------------------------------------------------------------------
def _add_train(sub: Subparsers) -> None:
    from .data import dataset_names

    p = sub.add_parser("train", help="train one backbone on a folder of images or a built-in dataset")
    p.add_argument("backbone", metavar="BACKBONE", nargs="?",
                   help="backbone name, e.g. resnet18 or timm/efficientnet_b0 (optional with --resume)")
    p.add_argument("--data", required=False, help="image folder (root/<class>/*.jpg or root/train + root/val) "
                   f"or a built-in dataset name ({', '.join(dataset_names())})")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last.pt")
    p.add_argument("--nproc", type=int, default=None, help="launch N processes with torchrun (DDP)")
    _json_flag(p, "print the result summary as JSON")
    _add_train_options(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .training import train

    if not args.resume and not (args.backbone and args.data):
        raise ZooError("zoo train needs BACKBONE and --data PATH_OR_NAME (or --resume RUN_DIR)")
    if args.nproc and args.nproc > 1:
        from .distributed import launch_torchrun
        from .training.fit import check_train

        check_train(args.backbone, args.data, resume=args.resume, **_train_overrides(args))  # one line, not N
        return launch_torchrun(args._argv, args.nproc)
    result = train(args.backbone, args.data, resume=args.resume, **_train_overrides(args))
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 alone reports
        return 0
    if args.json:
        _print_json({"run_dir": str(result.run_dir), "best_epoch": result.best_epoch, **result.metrics})
    else:
        print(result.summary())
    return 0


# ---- zoo predict ---------------------------------------------------------------------------------
def _add_predict(sub: Subparsers) -> None:
    p = sub.add_parser("predict", help="label images with a trained run's best model")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by zoo train (or a .pt file)")
    p.add_argument("images", metavar="IMAGE_OR_FOLDER", nargs="+",
                   help="image files or folders of them (recursive); an unreadable file is reported on stderr "
                        "(exit status 2), the rest still print")
    p.add_argument("--topk", "-k", type=int, default=3, help="labels per image (default 3)")
    p.add_argument("--csv", metavar="FILE", default=None,
                   help="write the results to FILE as CSV (image, label_1, probability_1, …, error) instead of "
                        "printing a table")
    _json_flag(p, "print JSON")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    """Readable images are labelled and printed (or written to --csv); each unreadable one is a
    ``zoo: error:`` line (exit 2)."""
    from .inference import predict, write_predictions

    results = predict(args.run_dir, args.images, topk=args.topk, progress=True)
    failed = [r for r in results if "error" in r]
    if args.csv:
        write_predictions(results, args.csv)
        print(f"zoo predict: {len(results) - len(failed)} image(s) labelled, {len(failed)} unreadable → {args.csv}",
              file=sys.stderr)
    if args.json:
        _print_json(results)
    elif not args.csv and len(failed) < len(results):
        rows = [{"image": r["image"], "rank": i + 1, "label": t["label"], "probability": f"{t['probability']:.4f}"}
                for r in results for i, t in enumerate(r["top"])]
        print(format_table(rows, ["image", "rank", "label", "probability"]))
    sys.stdout.flush()
    for r in failed:
        print(f"zoo: error: {' '.join(r['error'].split())}", file=sys.stderr)
    return 2 if failed else 0


# ---- zoo export ----------------------------------------------------------------------------------
def _add_export(sub: Subparsers) -> None:
    p = sub.add_parser("export", help="export a run's model to ONNX or TorchScript, checked against PyTorch")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by zoo train (or a .pt file)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="default onnx")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="the exported file (default RUN_DIR/model.onnx or RUN_DIR/model.torchscript.pt); the "
                        "sidecar FILE.json holds classes and preprocessing")
    p.add_argument("--images", metavar="IMAGE", nargs="+", default=None,
                   help="images for the parity check (default: the run's validation images)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest logit difference accepted, relative to max(1, max |logit|) (default 1e-3)")
    _json_flag(p, "print the result as JSON")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .exporting import PARITY_TOLERANCE, export

    tolerance = PARITY_TOLERANCE if args.tolerance is None else args.tolerance
    res = export(args.run_dir, format=args.format, out=args.out, images=args.images, tolerance=tolerance)
    if args.json:
        _print_json({"path": str(res.path), "sidecar": str(res.sidecar), "format": res.format,
                     "backbone": res.backbone, "parity": asdict(res.parity)})
    else:
        print(res.summary())
    return 0


# ---- zoo compare ---------------------------------------------------------------------------------
def _add_compare(sub: Subparsers) -> None:
    p = sub.add_parser("compare", help="train several backbones × strategies on the same data; leaderboard")
    p.add_argument("backbones", metavar="BACKBONE", nargs="*", help="names or glob patterns ('resnet*')")
    p.add_argument("--data", required=True, help="image folder or built-in dataset name")
    p.add_argument("--strategies", "--strategy", dest="strategies", nargs="+", default=["feature-extraction"],
                   metavar="S", help="one or more strategies (default feature-extraction)")
    p.add_argument("--family", "-f", default=None, help="every backbone of this family (or filter patterns)")
    p.add_argument("--out", default="zoo-compare", help="output folder (default zoo-compare)")
    p.add_argument("--fallback-random", action="store_true",
                   help="run an entry from random init (clearly marked) when its pretrained weights are missing")
    p.add_argument("--rerun", action="store_true", help="run finished entries again instead of reusing them")
    _json_flag(p, "print the leaderboard as JSON")
    p.add_argument("--max-entries", type=int, default=64, metavar="N",
                   help="refuse to run more than N backbone x strategy entries (default 64; 0: no limit)")
    p.add_argument("--folds", type=int, default=None, metavar="K",
                   help="also fit each feature-extraction head on K stratified folds of train+val (cached "
                        "features, seconds) and report mean ± std top-1")
    p.add_argument("--select", type=int, default=None, metavar="K",
                   help="successive halving: rank every backbone without training (as `zoo rank`), feature "
                        "extraction on the best --select-keep fraction, then fine-tune (the other --strategies, "
                        "or finetune) only the K best of those by top-1")
    p.add_argument("--select-keep", type=float, default=0.5, metavar="F",
                   help="fraction of the ranked backbones that get a feature-extraction entry (default 0.5)")
    p.add_argument("--select-budget", type=int, default=None, metavar="N",
                   help="rank on a stratified subsample of about N training images (faster on large data)")
    p.add_argument("--select-score", choices=("probe", "logme"), default="probe",
                   help="what orders the ranking stage (default probe)")
    _add_train_options(p, skip=("strategy", "out_dir", "run_name"))
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from .comparison import compare

    board = compare(args.backbones, args.data, strategies=args.strategies, family=args.family, out_dir=args.out,
                    fallback_random=args.fallback_random, rerun=args.rerun, progress=not args.json,
                    max_entries=args.max_entries or None, folds=args.folds, select=args.select,
                    select_keep=args.select_keep, select_budget=args.select_budget, select_score=args.select_score,
                    **_train_overrides(args, skip=("strategy", "out_dir", "run_name")))
    if args.json:
        _print_json(board.rows())
    else:
        print(board.table())  # the one copy of the table: stdout (progress went to stderr)
    return 0 if any(e.finished for e in board.entries) else 1


# ---- zoo rank ------------------------------------------------------------------------------------
def _rank_skip() -> tuple[str, ...]:
    """The training options ``zoo rank`` does not take (every TrainConfig field but ``RANK_OPTIONS``)."""
    import dataclasses

    from .ranking import RANK_OPTIONS
    from .training import TrainConfig

    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in RANK_OPTIONS)


def _add_rank(sub: Subparsers) -> None:
    from .ranking import DEFAULT_SCORE, SCORES

    p = sub.add_parser("rank", help="rank many backbones on your images without fine-tuning (LogME, linear probe)")
    p.add_argument("backbones", metavar="PATTERN", nargs="*", help="names or glob patterns ('timm/resnet*')")
    p.add_argument("--data", required=True, help="image folder or built-in dataset name")
    p.add_argument("--budget", type=int, default=None, metavar="N",
                   help="score a stratified subsample of about N training images (default: the whole training split)")
    p.add_argument("--folds", type=int, default=5, metavar="K", help="folds of the linear-probe cross-validation (default 5)")
    p.add_argument("--score", choices=SCORES, default=DEFAULT_SCORE,
                   help=f"what orders the ranking (default {DEFAULT_SCORE}; both are always computed)")
    p.add_argument("--family", "-f", default=None, help="every backbone of this family (or filter patterns)")
    p.add_argument("--out", default="zoo-rank", help="output folder (default zoo-rank)")
    p.add_argument("--fallback-random", action="store_true",
                   help="score a backbone from random init (clearly marked) when its pretrained weights are missing")
    _json_flag(p, "print the ranking as JSON")
    p.add_argument("--max-entries", type=int, default=256, metavar="N",
                   help="refuse to score more than N backbones (default 256; 0: no limit)")
    _add_train_options(p, skip=_rank_skip())
    p.set_defaults(func=_cmd_rank)


def _cmd_rank(args: argparse.Namespace) -> int:
    from .ranking import rank

    ranking = rank(args.backbones, args.data, family=args.family, budget=args.budget, folds=args.folds,
                   score=args.score, out_dir=args.out, fallback_random=args.fallback_random,
                   max_entries=args.max_entries or None, progress=not args.json,
                   **_train_overrides(args, skip=_rank_skip()))
    if args.json:
        _print_json(ranking.rows())
    else:
        print(ranking.table())
    return 0 if any(e.ok for e in ranking.entries) else 1


# ---- zoo lr-find ---------------------------------------------------------------------------------
def _add_lr_find(sub: Subparsers) -> None:
    p = sub.add_parser("lr-find", help="LR range test: plot loss vs learning rate and suggest a value")
    p.add_argument("backbone", metavar="BACKBONE")
    p.add_argument("--data", required=True, help="image folder or built-in dataset name")
    p.add_argument("--steps", type=int, default=100, help="mini-batches to test (default 100)")
    p.add_argument("--start-lr", type=float, default=1e-7)
    p.add_argument("--end-lr", type=float, default=1.0)
    p.add_argument("--out", default="lr-find", help="folder for lr_find.png and lr_find.json")
    _json_flag(p)
    _add_train_options(p, skip=("epochs", "lr", "out_dir", "run_name", "early_stopping", "cache_features",
                                "max_steps", "warmup_epochs", "label_smoothing", "channels_last", "precision",
                                "log", "log_dir"))
    p.set_defaults(func=_cmd_lr_find)


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from .training import lr_find

    overrides = _train_overrides(args, skip=("epochs", "lr", "out_dir", "run_name", "early_stopping",
                                             "cache_features", "max_steps", "warmup_epochs", "label_smoothing",
                                             "channels_last", "precision", "log", "log_dir"))
    strategy = overrides.pop("strategy", "full")
    res = lr_find(args.backbone, args.data, strategy=strategy, start_lr=args.start_lr, end_lr=args.end_lr,
                  num_steps=args.steps, out=args.out, progress=not args.json, **overrides)
    if args.json:
        _print_json({"suggestion": res.suggestion, "plot": str(res.plot)})
    else:
        print(f"suggested learning rate: {res.suggestion:.2e}  (plot: {res.plot}; use it with "
              f"`zoo train {args.backbone} --lr {res.suggestion:.2e} …` or pass --lr auto)")
    return 0


# ---- zoo cache -----------------------------------------------------------------------------------
def _add_cache(sub: Subparsers) -> None:
    p = sub.add_parser("cache", help="show or clear the feature / decoded-image cache")
    p.add_argument("action", choices=["info", "clear"], help="info: list entries; clear: delete them")
    p.add_argument("what", nargs="?", choices=["features", "pixels", "all"], default=None, metavar="KIND",
                   help="features, pixels or all (default all); same as --kind")
    p.add_argument("--kind", choices=["features", "pixels", "all"], default="all")
    _json_flag(p)
    p.set_defaults(func=_cmd_cache)


def _cmd_cache(args: argparse.Namespace) -> int:
    from .cache import cache_root, cache_summary, clear_cache

    args.kind = args.what or args.kind
    if args.action == "clear":
        freed = clear_cache(args.kind)
        print(f"freed {freed / 2**20:.1f} MiB from {cache_root()}")
        return 0
    entries = [e for e in cache_summary() if args.kind == "all" or e.get("kind") == args.kind]
    if args.json:
        _print_json(entries)
    else:
        cols = ("kind", "backbone", "split", "n", "dim", "image_size", "size_bytes", "status", "created")
        print(format_table(entries, [c for c in cols if any(e.get(c) is not None for e in entries)])
              if entries else "cache is empty")
        print(f"cache root: {cache_root()} (clear with `zoo cache clear`)", file=sys.stderr)
    return 0


# ---- zoo demo ------------------------------------------------------------------------------------
def _add_demo(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="generate the built-in demo dataset and compare one backbone per plugin")
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--rerun", action="store_true", help="retrain entries even if finished")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    board = run_demo(args.out, rerun=args.rerun)
    return 0 if any(e.finished for e in board.entries) else 1


# ---- zoo report ----------------------------------------------------------------------------------
def _add_report(sub: Subparsers) -> None:
    p = sub.add_parser("report", help="(re)build the self-contained report.html of a compare or rank folder")
    p.add_argument("folder", metavar="DIR", help="the --out folder of `zoo compare` or `zoo rank`")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from .outputs.html_report import write_report

    print(write_report(args.folder))
    return 0


# ---- wiring --------------------------------------------------------------------------------------
_COMMANDS: list[Callable[[Subparsers], None]] = [
    _add_plugins, _add_list, _add_info, _add_train, _add_predict, _add_export, _add_compare, _add_rank,
    _add_report, _add_lr_find, _add_cache, _add_demo,
]
"""Every subcommand's ``_add_<cmd>``, in ``zoo --help`` order."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one ``zoo: error:`` line (exit status 2), not the usage
    text of every option; ``--help`` still shows it all."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"zoo: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``zoo`` argument parser with every command in :data:`_COMMANDS`."""
    parser = _Parser(prog="zoo", description="backbone-zoo: pretrained vision backbones for transfer learning")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``zoo`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        args._argv = argv
        args._weights_given = _weights_given(argv)
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
