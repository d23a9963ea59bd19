"""Install a file only after it passed its checks: the old file stays until the new one is proven."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from medcore.atomic import atomic_write

T = TypeVar("T")


def write_checked(path: Path, data: bytes, check: Callable[[Path], T]) -> T:
    """Write `data` beside `path`, run `check(temp)`, then rename it into place; any failure leaves `path` as it was."""
    result = atomic_write(path, lambda handle: handle.write(data), check)
    return result  # type: ignore[return-value]  # check always runs, so this is check's result
