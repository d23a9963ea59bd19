"""Exact resume: a run stopped by SIGTERM mid-epoch (DataLoader workers, augmentation, drop-path on) and resumed
ends with the very weights of an uninterrupted run; changed settings refuse; best.pt stays small."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from trainer_support import PNEUMONIAMNIST, QUICK_FLAGS

import trainer.run
from trainer.checkpoint import load_checkpoint
from trainer.cli import main

# 32 training images in batches of 8: 4 batches an epoch, 2 epochs; 2 workers, default augmentation and drop-path.
FLAGS = ["--data-kind", "medmnist", "--data-path", str(PNEUMONIAMNIST), "--limit", "32", *QUICK_FLAGS,
         "--batch-size", "8", "--epochs", "2", "--workers", "2"]  # fmt: skip


class SignalAtBatch(nn.Module):
    """The training loss, which sends this process SIGTERM while computing batch `at` (counted from 1)."""

    def __init__(self, inner: nn.Module, at: int) -> None:
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        result: torch.Tensor = self.inner(logits, targets)
        return result


def _states(path: Path) -> dict[str, Any]:
    checkpoint = load_checkpoint(path)
    return {"model": checkpoint.model_state, "optimizer": checkpoint.training_state["optimizer"]["state"]}


def _assert_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for index, state in a["optimizer"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["optimizer"][index][name])), (index, name)


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(["train", *FLAGS, "--output-dir", str(straight)]) == 0

    real = trainer.run.build_criterion

    def signalling(*args: Any, **kwargs: Any) -> nn.Module:
        criterion = real(*args, **kwargs)
        return SignalAtBatch(criterion, at=7) if len(args) == 3 else criterion  # the training loss only

    monkeypatch.setattr(trainer.run, "build_criterion", signalling)
    assert main(["train", *FLAGS, "--output-dir", str(stopped)]) == 0  # stopped cleanly, exit 0
    assert "stopped by SIGTERM in epoch 2/2 after 3 batches" in capsys.readouterr().err
    partial = load_checkpoint(stopped / "last.pt")
    assert partial.epoch == 0 and partial.training_state["partial_batches"] == 3
    assert not (stopped / "metrics.json").exists()
    monkeypatch.setattr(trainer.run, "build_criterion", real)

    changed = main(["train", *FLAGS, "--lr", "0.002", "--output-dir", str(stopped), "--resume"])
    assert changed == 1 and "cannot resume: the settings differ from the checkpoint's (optim.lr: 0.001 -> 0.002)" in (
        capsys.readouterr().err
    )
    assert main(["train", *FLAGS, "--workers", "1", "--output-dir", str(stopped), "--resume"]) == 0
    _assert_equal(_states(straight / "last.pt"), _states(stopped / "last.pt"))

    best, last = straight / "best.pt", straight / "last.pt"
    assert load_checkpoint(best).training_state == {}  # weights and record only
    assert best.stat().st_size < 0.5 * last.stat().st_size
