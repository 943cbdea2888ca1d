"""Small helpers shared by every room: atomic file writes (and the cleanup of a killed write's temporary
file), digests and short name lists for messages."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Sequence

from .errors import ZooError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()  # what open() would give a new file (mkstemp's own is 0o600)


_TEMP_PREFIX, _TEMP_SUFFIX = ".{name}.", ".tmp"  # atomic_write's temporary file: .<name>.<random>.tmp
_TEMP_NAME = re.compile(r"\..+\.[^./\\]+" + re.escape(_TEMP_SUFFIX))


def is_temp_file(name: str) -> bool:
    """True when ``name`` is a temporary file of :func:`atomic_write` (``.<target name>.<random>.tmp``)."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` left in ``folder`` when its process was killed
    mid-write (a partial ``.last.pt.<random>.tmp`` can be as large as the model); the removed paths.

    Call it only where no other process is writing (a run directory its run opens, a resumed run)."""
    removed = []
    for p in Path(folder).iterdir() if Path(folder).is_dir() else ():
        if is_temp_file(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def atomic_write(path: Path, write: Callable[[BinaryIO], None], *, sync: bool = True) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then ``os.replace`` it into place.

    A crash or interruption leaves either the old file or the new one, never half of one; the temporary
    file (``.<name>.<random>.tmp``) is removed on any error; one left by a killed process is removed by
    :func:`remove_stale_temps`. ``sync=False`` skips the fsync (for bulk writes of small files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX.format(name=path.name), suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data), sync=sync)


def atomic_write_text(path: Path, text: str) -> None:
    """Text (UTF-8) version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def digest(header: Any, rows: Iterable[str | bytes] = (), length: int = 32) -> str:
    """Hex SHA-256 of ``header`` as sorted JSON followed by ``rows`` (one per line), cut to ``length``."""
    h = hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode())
    for row in rows:
        h.update(row if isinstance(row, bytes) else row.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()[:length]


def few(items: Sequence[str], n: int = 8, *, sort: bool = False) -> str:
    """``"a, b, c … (+N more)"``: at most ``n`` items of a list for an error message."""
    items = sorted(items) if sort else list(items)
    more = f" … (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def under(name: str, prefix: str) -> bool:
    """True when the dotted module/parameter ``name`` is ``prefix`` or lies inside it."""
    return name == prefix or name.startswith(prefix + ".")


def is_single_name(name: str) -> bool:
    """True when ``name`` is one path component: not empty, not ``.`` or ``..``, no separator or NUL."""
    return isinstance(name, str) and name not in ("", ".", "..") and not set("/\\\0") & set(name)


def child_dir(parent: str | os.PathLike, name: str, what: str) -> Path:
    """``parent/name``, refused with a one-line error naming ``what`` unless ``name`` is a single path
    component whose resolved path (symbolic links followed) stays inside ``parent``."""
    if not is_single_name(name):
        raise ZooError(f"{what} must be a folder name without path separators (not '.' or '..'), got {name!r}")
    path = Path(parent) / name
    root = Path(parent).resolve()
    if root not in path.resolve().parents:
        raise ZooError(f"{what} {name!r} resolves to {str(path.resolve())!r}, outside {str(parent)!r}")
    return path


def check_output_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path, refused with a one-line error naming ``what`` when it exists but is not a folder
    (or a parent of it is a file), so a command fails before any work rather than after it."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists() and not q.is_dir():
            raise ZooError(f"{what} {str(p)!r} cannot be a folder: {str(q)!r} is a file")
    return p


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)|-")


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path, refused with a one-line error naming ``what`` when it is a folder or a parent of it
    is a file (checked before any work, like :func:`check_output_folder`)."""
    p = Path(path)
    if p.is_dir():
        raise ZooError(f"{what} {str(p)!r} is a folder: give a file name")
    check_output_folder(p.parent, what)
    return p


def csv_cell(value: Any) -> Any:
    """``value`` safe for a spreadsheet: a text starting with ``= + - @`` (or a tab or carriage return) gets
    a leading ``'`` so it is never run as a formula (OWASP's advice); numbers, and texts that are numbers or
    a lone ``-``, are kept as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_text(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as CSV text with a header of ``columns``, every cell through :func:`csv_cell`; the one way
    backbone-zoo writes a CSV file (the JSON files keep the exact values)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def csv_value(text: str) -> str:
    """The text :func:`csv_cell` was given: the leading ``'`` it added taken off again (for files we read back)."""
    if text.startswith("'") and text[1:].startswith(_FORMULA_START) and not _NUMBER.fullmatch(text[1:]):
        return text[1:]
    return text
