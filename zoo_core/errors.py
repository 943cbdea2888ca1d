"""Exceptions raised by backbone-zoo; every message says what went wrong and what to do."""

from __future__ import annotations


class ZooError(Exception):
    """Base class of every error backbone-zoo raises on purpose."""


class UnknownFamilyError(ZooError, KeyError):
    """A family (or plugin) name that no loaded plugin provides."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownBackboneError(ZooError, KeyError):
    """A backbone name that no loaded plugin provides."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DuplicateBackboneError(ZooError):
    """Two plugins claim the same backbone name."""


class WeightsError(ZooError):
    """Pretrained or local weights could not be found or do not fit the model."""


class DataError(ZooError):
    """A dataset path, file or option that cannot be used."""


class TrainingError(ZooError):
    """Training had to stop (e.g. a NaN loss); the best checkpoint is kept."""
