"""Atomic file writes: a crash leaves the old file or the new one, never half of one.

The new content goes to a temporary file beside the target (`.<name>.<random>.tmp`), is fsynced, renamed
over the target, and the directory is fsynced so that the rename itself survives a power loss. The writer
holds an exclusive `flock` on its temporary file while it exists; a process killed mid-write (SIGKILL, OOM)
leaves its temporary file behind unlocked, and the next write of the same target removes it.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")


def atomic_write(path: Path, write: Callable[[BinaryIO], object], check: Callable[[Path], T] | None = None) -> T | None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, run `check(temp)`, rename it into place.

    Any failure, in writing or in `check`, removes the temporary file and leaves `path` untouched.
    The file gets the mode a plain `open()` would give it (or the mode of the file it replaces).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released by the kernel however this process ends
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            os.chmod(tmp, _target_mode(path))
            result = check(tmp) if check is not None else None
            os.replace(tmp, path)
        _fsync_directory(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporary files of `path` that no live writer holds (left by a killed one); return them.

    Two processes writing one path at the same instant is not supported (the later rename wins anyway).
    """
    removed = []
    for candidate in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            fd = os.open(candidate, os.O_RDONLY)
        except FileNotFoundError:  # its writer finished meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
        except BlockingIOError:  # a live writer holds it
            pass
        finally:
            os.close(fd)
    return removed


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX: the entry lives in the directory, not the file)."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _target_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
