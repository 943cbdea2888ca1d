"""The library's output: one ``backbone_zoo`` logger for its ``zoo train:`` / ``zoo compare:`` lines, one
switch for its progress bars.

As a library, backbone-zoo prints nothing it is not asked to: every line goes to the ``backbone_zoo`` logger
(configure it with :mod:`logging` to collect the lines), and is also echoed to stderr only when the caller
asked for progress (``train(..., progress=True)``, the default) *and* logging has no handler for it. The
``zoo`` command installs a handler that prints the lines to stderr exactly as they read.
:func:`set_progress` turns every progress bar off (``False``) or back to each call's ``progress`` (``None``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

LOGGER_NAME = "backbone_zoo"
logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())  # a library's logger: silent until the application configures logging

_bars: bool | None = None  # set_progress: False turns every bar off; None leaves it to each call


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (so redirected and captured stderr work)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _handled() -> bool:
    """True when some handler other than a NullHandler would receive the logger's INFO lines."""
    log: logging.Logger | None = logger
    while log is not None:
        if any(not isinstance(h, logging.NullHandler) for h in log.handlers) and log.isEnabledFor(logging.INFO):
            return True
        log = log.parent if log.propagate else None
    return False


def say(message: str, *, echo: bool = True) -> None:
    """Log ``message`` at INFO on the ``backbone_zoo`` logger; with ``echo`` and no handler for it, print it to
    stderr as well (what the library does when the caller asked for progress and logging is unconfigured)."""
    logger.info(message)
    if echo and not _handled():
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def cli_output() -> Iterator[None]:
    """While the ``zoo`` command runs: the logger's lines print to stderr as they read, nothing else."""
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def set_progress(enabled: bool | None) -> None:
    """Progress bars everywhere: ``False`` turns them all off; ``None`` (default) leaves them to each call's
    ``progress`` argument."""
    global _bars
    _bars = enabled


def progress(requested: bool) -> bool:
    """Whether a bar the caller asked for (``requested``) is shown, after :func:`set_progress`."""
    return bool(requested) and _bars is not False
