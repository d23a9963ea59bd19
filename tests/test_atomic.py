"""Atomic writes: the old file or the new one, never half of one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from medcore.atomic import atomic_write


def test_write_replaces_the_file_with_a_normal_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "model.bin"
    atomic_write(target, lambda handle: handle.write(b"new"))
    assert target.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert list(target.parent.iterdir()) == [target]


def test_a_failed_write_or_check_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")

    def broken_write(handle: object) -> None:
        raise OSError("disk full")

    def failing_check(path: Path) -> None:
        assert path.read_bytes() == b"candidate"
        raise ValueError("parity failed")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken_write)
    with pytest.raises(ValueError, match="parity failed"):
        atomic_write(target, lambda handle: handle.write(b"candidate"), failing_check)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]
    assert atomic_write(target, lambda handle: handle.write(b"ok"), lambda path: path.stat().st_size) == 2
