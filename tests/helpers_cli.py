"""Calling ``zoo`` in-process in tests: exit status, stdout and stderr; the one-line error a failure prints
(on stderr, or as the message of the exception the library raises)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from zoo_core import cli


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    """``cli.main(argv)`` (arguments ``str()``-ed) → ``(exit status, stdout, stderr)``."""
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: Any) -> Any:
    """``cli.main(argv)``, which must succeed → its stdout parsed as JSON."""
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return json.loads(out)


def one_line_error(err: str) -> str:
    """The single ``zoo: error: …`` line a failed command prints (and nothing else, no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("zoo: error: "), err
    return lines[0]


def one_line(exc: BaseException) -> str:
    """The message of ``exc``, which must be a single non-empty line."""
    msg = str(exc)
    assert msg and "\n" not in msg, msg
    return msg
