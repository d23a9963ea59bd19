"""Atomic writes: the old file or the new one, never half of one."""

from __future__ import annotations

import fcntl
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


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write_a_live_ones_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    stale = tmp_path / ".last.pt.killed.tmp"  # what a writer killed by SIGKILL leaves: nobody holds its lock
    stale.write_bytes(b"half")
    live = tmp_path / ".last.pt.live.tmp"
    live.write_bytes(b"writing")
    other = tmp_path / ".best.pt.killed.tmp"  # another target's: left for that target's next write
    other.write_bytes(b"half")
    with live.open("rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # a writer still at work
        atomic_write(target, lambda h: h.write(b"new"))
        assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, live.name, target.name]
    assert target.read_bytes() == b"new"


def test_the_directory_is_fsynced_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "best.pt"
    synced: list[tuple[bool, bytes | None]] = []  # (a directory?, the target's content at that moment)
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        synced.append((is_dir, target.read_bytes() if target.exists() else None))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write(target, lambda handle: handle.write(b"new"))
    assert synced == [(False, None), (True, b"new")]  # the file before the rename, its directory after
