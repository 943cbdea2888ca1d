"""The ``zoo`` command line: a thin argparse layer over the library (the parser and :func:`main`).

Each command is a pair ``add_<cmd>(subparsers)`` (declares its arguments and sets ``func``) and
``_cmd_<cmd>(args) -> int`` (calls the library and prints), in the module of its group: :mod:`.catalog`
(plugins, list, info, cache), :mod:`.runs` (train, predict, export, lr-find), :mod:`.compare` (compare, rank,
report, demo). Add a command by writing both and listing ``add_<cmd>`` in :data:`COMMANDS`; the training
options are generated from :class:`~zoo_core.TrainConfig` (:mod:`.common`). A :class:`zoo_core.ZooError`
becomes one line on stderr and exit status 2, and so does a usage error (an unknown option, ``--epochs abc``);
the library checks the option values (:func:`zoo_core.training.config.validate`), so the CLI and Python
callers get the same line.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, NoReturn

from .. import __version__
from ..errors import ZooError
from ..logs import cli_output
from . import catalog, compare, runs
from .common import Subparsers, warnings_above_bars, weights_given

COMMANDS: list[Callable[[Subparsers], None]] = [
    catalog.add_plugins, catalog.add_list, catalog.add_info, runs.add_train, runs.add_predict, runs.add_export,
    compare.add_compare, compare.add_rank, compare.add_report, runs.add_lr_find, catalog.add_cache, compare.add_demo,
]
"""Every subcommand's ``add_<cmd>``, in ``zoo --help`` order."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one ``zoo: error:`` line (exit status 2), not the usage
    text of every option; ``--help`` still shows it all."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"zoo: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``zoo`` argument parser with every command in :data:`COMMANDS`."""
    parser = _Parser(prog="zoo", description="backbone-zoo: pretrained vision backbones for transfer learning")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``zoo`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        args._argv = argv
        args._weights_given = weights_given(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        with warnings_above_bars(), cli_output():
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
