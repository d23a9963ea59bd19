"""DDP through torchrun: two CPU processes (gloo) against one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_support import PNEUMONIAMNIST, QUICK_FLAGS

from trainer.checkpoint import load_checkpoint
from trainer.cli import main
from trainer.distributed import ShardSampler

REPO = Path(__file__).resolve().parents[1]
# 64 images per split; drop-path off (its per-sample draws would differ between one batch of 16 and two of 8).
FLAGS = ["--data-kind", "medmnist", "--data-path", str(PNEUMONIAMNIST), "--limit", "64", *QUICK_FLAGS,
         "--epochs", "2", "--workers", "0", "--set", "model.drop_path=0"]  # fmt: skip


@pytest.mark.parametrize(("size", "replicas"), [(5, 2), (64, 2), (7, 3), (2, 4)])
def test_shards_hold_every_sample_once_in_order(size: int, replicas: int) -> None:
    shards = [list(ShardSampler(size, replicas, rank)) for rank in range(replicas)]
    assert [index for shard in shards for index in shard] == list(range(size))
    assert [len(ShardSampler(size, replicas, rank)) for rank in range(replicas)] == [len(s) for s in shards]


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path) -> None:
    """Two ranks of batch 8 against one process of batch 16, 4 optimiser steps an epoch, 2 epochs.

    Rank r takes every r-th index of the epoch's order, so step k of the two ranks together sees exactly
    the 16 images of the single process's step k, with the same per-sample augmentation (seeded by index).
    ConvNeXt normalises per sample (LayerNorm, no BatchNorm) and drop-path is off, so the averaged gradient
    is the full-batch gradient up to the order of float32 additions (two half-batch means all-reduced
    against one mean). Measured: the weights differ by at most 2e-7 after 8 AdamW steps; the bound is 1e-5
    (AdamW divides by sqrt(v), which can magnify a rounding difference in a near-zero gradient).
    Probabilities then differ by far less than the gaps between samples: AUROC and the losses agree to 1e-3.
    """
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "trainer", "train", *FLAGS, "--batch-size", "8", "--output-dir", str(two)]  # fmt: skip
    launched = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stderr.count("epoch 2/2") == 1  # rank 0 alone logs
    assert "Warning" not in launched.stderr, launched.stderr[-3000:]  # library warnings do not leak to the user
    assert main(["train", *FLAGS, "--batch-size", "16", "--output-dir", str(one)]) == 0

    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    metrics_two, metrics_one = (json.loads((d / "metrics.json").read_text()) for d in (two, one))
    for split in ("val", "test"):
        assert metrics_two[split]["n"] == metrics_one[split]["n"] == 64  # every sample exactly once
        assert metrics_two[split]["auroc"] == pytest.approx(metrics_one[split]["auroc"], abs=1e-3)
    for row_two, row_one in zip(metrics_two["history"], metrics_one["history"], strict=True):
        assert row_two["train_loss"] == pytest.approx(row_one["train_loss"], abs=1e-3)
        assert row_two["val_loss"] == pytest.approx(row_one["val_loss"], abs=1e-3)

    last_two, last_one = load_checkpoint(two / "last.pt"), load_checkpoint(one / "last.pt")
    assert set(last_two.model_state) == set(last_one.model_state)  # the bare module's names, no "module."
    for key, value in last_one.model_state.items():
        assert torch.allclose(last_two.model_state[key], value, atol=1e-5), key
    steps = [s["step"] for s in last_two.training_state["optimizer"]["state"].values()]
    assert np.unique(steps).tolist() == [8.0]  # 4 steps an epoch per rank, as in the single process

    # The DDP run's last.pt holds the bare network: one process continues it with the same flags (a smaller
    # global batch, so a continuation rather than a replay).
    assert main(["train", *FLAGS, "--batch-size", "8", "--epochs", "3", "--output-dir", str(two), "--resume"]) == 0
    assert len(json.loads((two / "metrics.json").read_text())["history"]) == 3
