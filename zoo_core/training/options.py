"""One home per training option: what each :class:`~zoo_core.TrainConfig` field carries as data.

A field is declared with :func:`option`: its default, its ``--flag`` help, its rule (a check and what is
allowed, said in the error) and its policies — whether a resume may change it, whether it enters compare's
entry signature, whether ``rank`` and ``lr-find`` take it, how the command line reads it. Everything else is
derived from these records: the CLI flags and their help, :func:`~zoo_core.training.config.validate`,
``RESUMABLE``, the signature's excluded options and ``RANK_OPTIONS``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ZooError

Rule = tuple[Callable[[Any], bool], str]
"""An option's check and what it allows (said in the error: ``--flag must be <allowed>, got …``)."""


@dataclass(frozen=True)
class Option:
    """Everything about one :class:`~zoo_core.TrainConfig` field besides its name, type and default."""

    help: str  # the --flag's help text (and the field's documentation)
    check: Callable[[Any], bool]  # does a value pass validate?
    allowed: str  # what the check allows, for the error message
    resumable: bool = False  # a resumed run may change it (the run honours it from the resumed epoch on)
    signed: bool = True  # part of a compare entry's signature (it changes the entry's result)
    rank: bool = False  # `zoo rank` takes it (it decides the features)
    lr_find: bool = True  # `zoo lr-find` takes it
    cli: bool = True  # a --flag of its own on train, compare, rank and lr-find
    parse: Callable[[str], Any] | None = None  # how the command line reads it (ValueError: what it takes)
    bare: Any = None  # the value of the flag given without one (None: the flag needs a value)
    metavar: str | None = None  # the flag's value in --help
    off_help: str | None = None  # help of a --no-<flag> that sets False


def option(default: Any, help: str, rule: Rule, **policy: Any) -> Any:
    """A dataclass field with ``default`` whose metadata is its :class:`Option` (``policy``: its other fields)."""
    check, allowed = rule
    return dataclasses.field(default=default, metadata={"option": Option(help, check, allowed, **policy)})


def options_of(cls: type) -> dict[str, Option]:
    """Every field of dataclass ``cls`` with its :class:`Option`, in declaration order."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(cls)}


def flag(name: str) -> str:
    """The command-line spelling of a :class:`~zoo_core.TrainConfig` field: ``batch_size`` → ``--batch-size``."""
    return "BACKBONE" if name == "backbone" else "--" + name.replace("_", "-")


# ---- rules ----------------------------------------------------------------------------------------------------
def integer(low: int, *, optional: bool = False) -> Rule:
    """An integer (not a bool) of at least ``low`` (``optional``: or None)."""
    def ok(v: Any) -> bool:
        return (optional and v is None) or (isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                             and v >= low)
    return ok, {0: "an integer >= 0", 1: "a positive integer"}.get(low, f"an integer >= {low}")


def number(low: float, high: float = math.inf, *, above: bool = False, below: bool = False,
           optional: bool = False) -> Rule:
    """A finite real in the interval from ``low`` to ``high`` (``above``/``below``: open at that end)."""
    def ok(v: Any) -> bool:
        if optional and v is None:
            return True
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
            return False
        return (v > low if above else v >= low) and (v < high if below else v <= high)
    if high == math.inf:
        what = f"a number {'>' if above else '>='} {low:g}"
    else:
        what = f"a number in {'(' if above else '['}{low:g}, {high:g}{')' if below else ']'}"
    return ok, what


def kind(*types: type, optional: bool = False, what: str) -> Rule:
    """An instance of one of ``types`` (``optional``: or None)."""
    return (lambda v: (optional and v is None) or isinstance(v, types)), what


def one_of(choices: tuple[str, ...], what: str | None = None, *, optional: bool = False) -> Rule:
    """One of ``choices`` (``optional``: or None); ``what`` defaults to the choices quoted, joined by commas."""
    return (lambda v: (optional and v is None) or v in choices), what or ", ".join(map(repr, choices))


def check_values(values: dict[str, tuple[Any, Rule]]) -> None:
    """Refuse the first value that breaks its rule (``{flag: (value, rule)}``) with the one-line error
    :func:`~zoo_core.training.config.validate` gives a training option: ``--flag must be <allowed>, got …``.
    The commands that are not a training run (lr-find's own range, predict, export) check theirs with it."""
    for name, (value, (ok, allowed)) in values.items():
        if not ok(value):
            raise ZooError(f"{name} must be {allowed}, got {value!r}")


PATH = (str, os.PathLike)
BOOLEAN = kind(bool, what="true or false")
FOLDER = kind(*PATH, optional=True, what="a folder")


# ---- command-line readers -------------------------------------------------------------------------------------
def auto_or(kind: type, what: str) -> Callable[[str], Any]:
    """Reads ``auto`` as it is, else ``kind(value)``; a ValueError says what it takes."""
    def parse(v: str) -> Any:
        if v == "auto":
            return v
        try:
            return kind(v)
        except ValueError:
            raise ValueError(f"{what} or 'auto'") from None
    return parse


def weights_arg(v: str) -> str | None:
    """``none``/``random`` as None (random init), anything else as it is."""
    return None if v.lower() in ("none", "random") else v
