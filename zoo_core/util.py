"""Small helpers shared by every room: atomic file writes, digests and short name lists for messages."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Sequence


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()  # what open() would give a new file (mkstemp's own is 0o600)


def atomic_write(path: Path, write: Callable[[BinaryIO], None], *, sync: bool = True) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then ``os.replace`` it into place.

    A crash or interruption leaves either the old file or the new one, never half of one; the temporary
    file is removed on any error. ``sync=False`` skips the fsync (for bulk writes of small files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
