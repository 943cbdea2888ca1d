"""Small helpers shared by every room: atomic file writes (and the cleanup of a killed write's temporary
file), digests and short name lists for messages."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Sequence


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
