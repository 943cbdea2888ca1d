"""What the ``zoo`` commands share: JSON output, the ``--json`` flag, and the training options generated from
:class:`~zoo_core.TrainConfig` (one ``--flag`` per field, its help and parsing read from the field's
:class:`~zoo_core.training.options.Option`), so the CLI never drifts from the API."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from ..training.options import Option

Subparsers = Any  # argparse's _SubParsersAction (private type)


class TqdmLogHandler(logging.Handler):
    """Log records as ``zoo: warning: …`` lines written through ``tqdm.write``, so they appear above a
    progress bar instead of on its line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(f"zoo: {record.levelname.lower()}: {' '.join(record.getMessage().split())}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


@contextlib.contextmanager
def warnings_above_bars(level: int = logging.WARNING) -> Iterator[None]:
    """While a command runs: backbone-zoo's warnings (logger ``zoo_core``) through :class:`TqdmLogHandler`."""
    logger, handler = logging.getLogger("zoo_core"), TqdmLogHandler(level)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def print_json(obj: Any) -> None:
    """``obj`` as indented JSON on stdout (anything else as its ``str``)."""
    print(json.dumps(obj, indent=2, default=str))


def json_flag(p: argparse.ArgumentParser, help: str = "print JSON") -> None:
    """The ``--json`` flag every command that prints results has."""
    p.add_argument("--json", action="store_true", help=help)


def train_flags(where: Callable[[str, Option], bool] = lambda name, o: True) -> tuple[str, ...]:
    """The :class:`~zoo_core.TrainConfig` fields with a ``--flag`` of their own that ``where`` keeps."""
    from ..training.config import OPTIONS

    return tuple(name for name, o in OPTIONS.items() if o.cli and where(name, o))


def _reader(name: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from an option's ``parse``: its ValueError becomes one line naming the flag."""
    from ..training.options import flag

    def read(v: str) -> Any:
        try:
            return parse(v)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{flag(name)} takes {exc}, not {v!r}") from None
    return read


def add_train_options(p: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """One ``--option`` per field in ``names`` (defaults stay the config's: None means 'not given')."""
    import dataclasses

    from ..training import TrainConfig
    from ..training.options import flag

    types = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    for name in names:
        o = TrainConfig.__dataclass_fields__[name].metadata["option"]
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": o.help}
        if o.parse is not None:
            kwargs["type"] = _reader(name, o.parse)
        elif o.bare is not None:  # --augment [POLICY]: bare, the flag stands for o.bare
            kwargs.update(nargs="?", const=o.bare, metavar=o.metavar)
        elif types[name].startswith("bool"):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif types[name].startswith("int"):
            kwargs["type"] = int
        elif types[name].startswith("float"):
            kwargs["type"] = float
        p.add_argument(flag(name), **kwargs)
        if o.off_help is not None:  # --no-augment: the same destination, False
            p.add_argument("--no-" + flag(name)[2:], dest=name, action="store_const", const=False, help=o.off_help)


def train_overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The options among ``names`` given on the command line, as :class:`~zoo_core.TrainConfig` overrides."""
    out = {}
    for name in names:
        v = getattr(args, name, None)
        if v is not None or (name == "weights" and getattr(args, "_weights_given", False)):
            out[name] = v
    if out.get("early_stopping") == 0:
        out["early_stopping"] = None
    return out


def weights_given(argv: list[str]) -> bool:
    """Whether ``argv`` has ``--weights`` (whose ``none`` reads as None, which would look like 'not given')."""
    return any(a == "--weights" or a.startswith("--weights=") for a in argv)
