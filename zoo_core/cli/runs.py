"""``zoo train``, ``zoo lr-find``, ``zoo predict`` and ``zoo export``: one run, trained and used."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ZooError
from ..outputs.tables import format_table
from ..util import check_output_file
from .common import Subparsers, add_train_options, json_flag, print_json, train_flags, train_overrides


# ---- zoo train -----------------------------------------------------------------------------------
def add_train(sub: Subparsers) -> None:
    from ..data import dataset_names
    from ..training.config import OPTIONS

    p = sub.add_parser("train", help="train one backbone on a folder of images or a built-in dataset")
    p.add_argument("backbone", metavar="BACKBONE", nargs="?",
                   help=f"{OPTIONS['backbone'].help} (optional with --resume)")
    p.add_argument("--data", required=False, help="image folder (root/<class>/*.jpg or root/train + root/val) "
                   f"or a built-in dataset name ({', '.join(dataset_names())})")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last.pt")
    p.add_argument("--nproc", type=int, default=None, help="launch N processes with torchrun (DDP)")
    json_flag(p, "print the result summary as JSON")
    add_train_options(p, train_flags())
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from ..training import train

    if not args.resume and not (args.backbone and args.data):
        raise ZooError("zoo train needs BACKBONE and --data PATH_OR_NAME (or --resume RUN_DIR)")
    overrides = train_overrides(args, train_flags())
    if args.nproc and args.nproc > 1:
        from ..distributed import launch_torchrun
        from ..training.fit import check_train

        check_train(args.backbone, args.data, resume=args.resume, **overrides)  # one line, not N
        return launch_torchrun(args._argv, args.nproc)
    result = train(args.backbone, args.data, resume=args.resume, **overrides)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 alone reports
        return 0
    if args.json:
        print_json({"run_dir": str(result.run_dir), "best_epoch": result.best_epoch, **result.metrics})
    else:
        print(result.summary())
    return 0


# ---- zoo predict ---------------------------------------------------------------------------------
def add_predict(sub: Subparsers) -> None:
    p = sub.add_parser("predict", help="label images with a trained run's best model")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by zoo train (or a .pt file)")
    p.add_argument("images", metavar="IMAGE_OR_FOLDER", nargs="+",
                   help="image files or folders of them (recursive); an unreadable file is reported on stderr "
                        "(exit status 2), the rest still print")
    p.add_argument("--topk", "-k", type=int, default=3, help="labels per image (default 3)")
    p.add_argument("--csv", metavar="FILE", default=None,
                   help="write the results to FILE as CSV (image, label_1, probability_1, …, error) instead of "
                        "printing a table")
    json_flag(p, "print JSON")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    """Readable images are labelled and printed (or written to --csv); each unreadable one is a
    ``zoo: error:`` line (exit 2)."""
    from ..inference import predict, write_predictions

    if args.csv:
        check_output_file(args.csv, "--csv")
    results = predict(args.run_dir, args.images, topk=args.topk, progress=True)
    failed = [r for r in results if "error" in r]
    if args.csv:
        write_predictions(results, args.csv)
        print(f"zoo predict: {len(results) - len(failed)} image(s) labelled, {len(failed)} unreadable → {args.csv}",
              file=sys.stderr)
    if args.json:
        print_json(results)
    elif not args.csv and len(failed) < len(results):
        rows = [{"image": r["image"], "rank": i + 1, "label": t["label"], "probability": f"{t['probability']:.4f}"}
                for r in results for i, t in enumerate(r["top"])]
        print(format_table(rows, ["image", "rank", "label", "probability"]))
    sys.stdout.flush()
    for r in failed:
        print(f"zoo: error: {' '.join(r['error'].split())}", file=sys.stderr)
    return 2 if failed else 0


# ---- zoo export ----------------------------------------------------------------------------------
def add_export(sub: Subparsers) -> None:
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
    json_flag(p, "print the result as JSON")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..exporting import PARITY_TOLERANCE, export

    tolerance = PARITY_TOLERANCE if args.tolerance is None else args.tolerance
    res = export(args.run_dir, format=args.format, out=args.out, images=args.images, tolerance=tolerance)
    if args.json:
        print_json({"path": str(res.path), "sidecar": str(res.sidecar), "format": res.format,
                     "backbone": res.backbone, "parity": asdict(res.parity)})
    else:
        print(res.summary())
    return 0


# ---- zoo lr-find ---------------------------------------------------------------------------------
def _lr_find_flags() -> tuple[str, ...]:
    """The training options ``zoo lr-find`` takes (``lr_find=True`` in their option)."""
    return train_flags(lambda name, o: o.lr_find)


def add_lr_find(sub: Subparsers) -> None:
    p = sub.add_parser("lr-find", help="LR range test: plot loss vs learning rate and suggest a value")
    p.add_argument("backbone", metavar="BACKBONE")
    p.add_argument("--data", required=True, help="image folder or built-in dataset name")
    p.add_argument("--steps", type=int, default=100, help="mini-batches to test (default 100)")
    p.add_argument("--start-lr", type=float, default=1e-7)
    p.add_argument("--end-lr", type=float, default=1.0)
    p.add_argument("--out", default="lr-find", help="folder for lr_find.png and lr_find.json")
    json_flag(p)
    add_train_options(p, _lr_find_flags())
    p.set_defaults(func=_cmd_lr_find)


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from ..training import lr_find

    overrides = train_overrides(args, _lr_find_flags())
    strategy = overrides.pop("strategy", "full")
    res = lr_find(args.backbone, args.data, strategy=strategy, start_lr=args.start_lr, end_lr=args.end_lr,
                  num_steps=args.steps, out=args.out, progress=not args.json, **overrides)
    if args.json:
        print_json({"suggestion": res.suggestion, "plot": str(res.plot)})
    else:
        print(f"suggested learning rate: {res.suggestion:.2e}  (plot: {res.plot}; use it with "
              f"`zoo train {args.backbone} --lr {res.suggestion:.2e} …` or pass --lr auto)")
    return 0


