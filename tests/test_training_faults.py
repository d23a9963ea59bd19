"""Training faults on real processes: SIGKILL in the middle of a run then `--resume` gives the uninterrupted
run's weights, optimiser state and metrics; SIGKILLs at random moments of checkpoint writes never leave a
partial, corrupt or missing last.pt / best.pt, and the next write removes the killed writer's temporary file."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from trainer_support import PNEUMONIAMNIST, QUICK_FLAGS

from trainer.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
WRITER = Path(__file__).with_name("checkpoint_writer.py")
# 32 training images in batches of 8: 4 batches an epoch, 3 epochs; 2 workers, augmentation and drop-path on.
FLAGS = ["--data-kind", "medmnist", "--data-path", str(PNEUMONIAMNIST), "--limit", "32", *QUICK_FLAGS,
         "--batch-size", "8", "--epochs", "3", "--workers", "2"]  # fmt: skip
TIMINGS = {"wall_seconds", "seconds", "images_per_second"}
KILLS = 15
ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's packages, whatever the environment has installed


def _trainer(output_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "trainer", "train", *FLAGS, "--output-dir", str(output_dir), *extra]
    return subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(process: subprocess.Popen[bytes]) -> None:
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()[-2000:]


def _epoch_of(path: Path) -> int | None:
    """The finished epoch in `path`, or None while it does not exist (renamed into place: never half there)."""
    try:
        return load_checkpoint(path).epoch
    except FileNotFoundError:
        return None


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _assert_same_training(a: Path, b: Path) -> None:
    first, second = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert first.epoch == second.epoch == 2
    assert first.model_state.keys() == second.model_state.keys()
    for key, tensor in first.model_state.items():
        assert torch.equal(tensor, second.model_state[key]), key
    states = first.training_state["optimizer"]["state"], second.training_state["optimizer"]["state"]
    assert states[0].keys() == states[1].keys() and states[0]
    for index, state in states[0].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(states[1][index][name])), (index, name)
    metrics = [_without_timings(json.loads((folder / "metrics.json").read_text())) for folder in (a, b)]
    assert metrics[0] == metrics[1]


@pytest.mark.slow
def test_sigkill_in_epoch_2_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    uninterrupted = _trainer(straight)
    process = _trainer(killed)
    last = killed / "last.pt"
    while (epoch := _epoch_of(last)) is None and process.poll() is None:  # epoch 1 (index 0) not yet saved
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert epoch == 0 and _epoch_of(last) == 0, "the kill did not land in epoch 2"  # killed inside epoch 2 (index 1)
    assert not (killed / "metrics.json").exists()
    _finish(uninterrupted)
    _finish(_trainer(killed, "--resume"))
    _assert_same_training(straight, killed)


def _versions(path: Path) -> int | None:
    """The version in `path` after checking that every weight holds it (a complete, unmixed file), or None."""
    if not path.exists():
        return None
    checkpoint = load_checkpoint(path)
    value = checkpoint.epoch
    assert checkpoint.config == {"version": value}
    for name, tensor in checkpoint.model_state.items():
        assert bool((tensor == value).all()), (path.name, name, value)
    return value


def _writer(folder: Path) -> subprocess.Popen[bytes]:
    """A checkpoint writer; it imports, prints `ready` and waits for the first version to write."""
    return subprocess.Popen([sys.executable, str(WRITER), str(folder)], cwd=REPO, env=ENV, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _start(writer: subprocess.Popen[bytes], first: int) -> None:
    assert writer.stdout is not None and writer.stdin is not None
    assert writer.stdout.readline() == b"ready\n", writer.communicate()[1].decode()[-2000:]
    writer.stdin.write(f"{first}\n".encode())
    writer.stdin.flush()


def _temporaries(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.*.tmp"))


@pytest.mark.slow
def test_sigkill_at_random_moments_of_checkpoint_writes_leaves_complete_files(tmp_path: Path) -> None:
    rng = random.Random(11)
    written: dict[str, int] = {}  # per file, the newest version whose save had returned before a kill
    first, mid_write = 0, 0
    writer = _writer(tmp_path)
    for kill in range(KILLS):
        following = _writer(tmp_path) if kill + 1 < KILLS else None  # imports while this one writes
        _start(writer, first)
        time.sleep(rng.uniform(0.0, 0.6))  # a random moment of the save loop (seeded)
        os.kill(writer.pid, signal.SIGKILL)
        out, _ = writer.communicate(timeout=30)
        assert writer.returncode == -signal.SIGKILL
        for name, value in (line.split() for line in out.decode().splitlines()):
            written[f"{name}.pt"] = int(value)
        for name in ("last.pt", "best.pt"):
            found = _versions(tmp_path / name)
            if name in written:  # once written, never missing, never older than the last completed save
                assert found is not None and found >= written[name], (name, found, written[name])
            assert len(_temporaries(tmp_path, name)) <= 1  # the killed writer's own at most: older ones removed
        mid_write += bool(_temporaries(tmp_path, "last.pt") or _temporaries(tmp_path, "best.pt"))
        first = (_versions(tmp_path / "last.pt") or 0) + 1
        if following is not None:
            writer = following
    assert mid_write > 0, "no kill landed inside a write"
    print(f"\n{KILLS} kills, {mid_write} inside a write; newest versions {written}")
    finish = subprocess.run([sys.executable, str(WRITER), str(tmp_path), "--once"], cwd=REPO, env=ENV,
                            input=f"{first}\n".encode(), capture_output=True, check=True)  # fmt: skip
    assert finish.stdout.decode().split() == ["ready", "last", str(first), "best", str(first)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # leftovers removed
