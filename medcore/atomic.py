"""Atomic file writes: a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")


def atomic_write(
    path: Path, write: Callable[[BinaryIO], object], check: Callable[[Path], T] | None = None
) -> T | None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, run `check(temp)`, rename it into place.

    Any failure, in writing or in `check`, removes the temporary file and leaves `path` untouched.
    The file gets the mode a plain `open()` would give it (or the mode of the file it replaces).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _target_mode(path))
        result = check(tmp) if check is not None else None
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


def _target_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
