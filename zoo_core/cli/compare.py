"""``zoo compare``, ``zoo rank``, ``zoo report`` and ``zoo demo``: many backbones on the same data."""

from __future__ import annotations

import argparse

from ..scaleout.options import add_executor_options, executor_from_args
from .common import Subparsers, add_train_options, json_flag, print_json, train_flags, train_overrides

_OWN = ("strategy", "out_dir", "run_name")  # compare's own --strategies and --out; each entry names its run


# ---- zoo compare ---------------------------------------------------------------------------------
def add_compare(sub: Subparsers) -> None:
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
    json_flag(p, "print the leaderboard as JSON")
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
    add_train_options(p, _compare_flags())
    add_executor_options(p)
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..comparison import compare

    board = compare(args.backbones, args.data, strategies=args.strategies, family=args.family, out_dir=args.out,
                    fallback_random=args.fallback_random, rerun=args.rerun, progress=not args.json,
                    max_entries=args.max_entries or None, folds=args.folds, select=args.select,
                    select_keep=args.select_keep, select_budget=args.select_budget, select_score=args.select_score,
                    executor=executor_from_args(args, not args.json), **train_overrides(args, _compare_flags()))
    if args.json:
        print_json(board.rows())
    else:
        print(board.table())  # the one copy of the table: stdout (progress went to stderr)
    return 0 if any(e.finished for e in board.entries) else 1


# ---- zoo rank ------------------------------------------------------------------------------------
def _compare_flags() -> tuple[str, ...]:
    """The training options ``zoo compare`` takes: every one but those it sets itself (:data:`_OWN`)."""
    return train_flags(lambda name, o: name not in _OWN)


def _rank_flags() -> tuple[str, ...]:
    """The training options ``zoo rank`` takes (``RANK_OPTIONS``; it refuses the rest)."""
    return train_flags(lambda name, o: o.rank)


def add_rank(sub: Subparsers) -> None:
    from ..ranking import DEFAULT_SCORE, SCORES

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
    json_flag(p, "print the ranking as JSON")
    p.add_argument("--max-entries", type=int, default=256, metavar="N",
                   help="refuse to score more than N backbones (default 256; 0: no limit)")
    add_train_options(p, _rank_flags())
    add_executor_options(p)
    p.set_defaults(func=_cmd_rank)


def _cmd_rank(args: argparse.Namespace) -> int:
    from ..ranking import rank

    ranking = rank(args.backbones, args.data, family=args.family, budget=args.budget, folds=args.folds,
                   score=args.score, out_dir=args.out, fallback_random=args.fallback_random,
                   max_entries=args.max_entries or None, progress=not args.json,
                   executor=executor_from_args(args, not args.json), **train_overrides(args, _rank_flags()))
    if args.json:
        print_json(ranking.rows())
    else:
        print(ranking.table())
    return 0 if any(e.ok for e in ranking.entries) else 1


# ---- zoo demo ------------------------------------------------------------------------------------
def add_demo(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="generate the built-in demo dataset and compare one backbone per plugin")
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--rerun", action="store_true", help="retrain entries even if finished")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    board = run_demo(args.out, rerun=args.rerun)
    return 0 if any(e.finished for e in board.entries) else 1


# ---- zoo report ----------------------------------------------------------------------------------
def add_report(sub: Subparsers) -> None:
    p = sub.add_parser("report", help="(re)build the self-contained report.html of a compare or rank folder")
    p.add_argument("folder", metavar="DIR", help="the --out folder of `zoo compare` or `zoo rank`")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from ..outputs.html_report import write_report

    print(write_report(args.folder))
    return 0


