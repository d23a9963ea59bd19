"""Training speed: the trainer's own path against a bare loop, in the same run, on the CPU.

    .venv/bin/python bench/train_speed.py [--arch convnext_atto] [--size 128] [--batch-size 32] [--steps 8]

Trainer: a synthetic PneumoniaMNIST-shaped .npz (random uint8 images of --size) read by the trainer's
medmnist reader, `build_run` (dataset, default augmentation, seeded sampler, loss, AdamW, schedule) and
`train_one_epoch` over --steps batches. Bare: the same network (`build_model`), the same optimiser
(`build_optimizer`), the same batch size, fixed random tensors, forward + backward + step, nothing else.
Rounds alternate the two (the first of each is a warm-up); printed: the medians and the median of the
per-round ratios (each ratio compares two back-to-back measurements, so a load change elsewhere moves it less).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.config import load_config  # noqa: E402
from trainer.data import load_data, make_dataset  # noqa: E402
from trainer.engine import train_one_epoch  # noqa: E402
from trainer.models import build_model  # noqa: E402
from trainer.optim import build_optimizer  # noqa: E402
from trainer.recipe import resolve_recipe  # noqa: E402
from trainer.run import Run, build_run  # noqa: E402


def synthetic_npz(folder: Path, size: int, count: int) -> Path:
    """Random uint8 images and binary labels in the MedMNIST layout (named so the reader knows the label)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", count), ("val", 8), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    path = folder / "pneumoniamnist_synthetic.npz"
    np.savez(path, **arrays)
    return path


def trainer_run(args: argparse.Namespace, folder: Path) -> Run:
    path = synthetic_npz(folder, args.size, args.steps * args.batch_size)
    config = load_config(overrides={
        "data.kind": "medmnist", "data.path": str(path), "data.num_workers": args.workers, "model.arch": args.arch,
        "batch_size": args.batch_size, "progress": False, "output_dir": str(folder / "out"), "device": "cpu",
    })  # fmt: skip
    data = load_data(config.data)
    recipe = resolve_recipe(config.preprocessing, data, partial(make_dataset, config=config.data))
    return build_run(config, data, recipe, None)


def trainer_rate(run: Run, epoch: int) -> float:
    run.train_sampler.set_epoch(epoch)
    run.train_samples.epoch = epoch
    stats = train_one_epoch(run.model, run.criterion, run.optimizer, run.scheduler, run.scaler, run.train_loader,
                            run.precision, progress=False)  # fmt: skip
    return stats.images_per_second


def bare_rate(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, targets: torch.Tensor,
              steps: int) -> float:  # fmt: skip
    criterion = nn.BCEWithLogitsLoss()
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        loss = criterion(model(images), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="convnext_atto")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="optimiser steps per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each, after one warm-up round")
    parser.add_argument("--workers", type=int, default=0, help="the trainer's DataLoader workers")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        run = trainer_run(args, Path(folder))
        model = build_model(run.spec)
        optimizer = build_optimizer(model, run.config.optim)
        images = torch.randn(args.batch_size, run.recipe.channels, args.size, args.size)
        targets = torch.randint(0, 2, (args.batch_size, 1)).float()
        trainer, bare = [], []
        for index in range(args.rounds + 1):
            trainer.append(trainer_rate(run, index))
            bare.append(bare_rate(model, optimizer, images, targets, args.steps))
    trainer_speed, bare_speed = statistics.median(trainer[1:]), statistics.median(bare[1:])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__},"
          f" {torch.get_num_threads()} threads; {args.arch} {args.size}x{args.size}, batch {args.batch_size},"
          f" {args.steps} steps x {args.rounds} rounds, trainer workers {args.workers}")  # fmt: skip
    print(f"{'path':<10}{'img/s':>10}   rounds")
    print(f"{'trainer':<10}{trainer_speed:>10.1f}   {', '.join(f'{r:.1f}' for r in trainer[1:])}")
    print(f"{'bare loop':<10}{bare_speed:>10.1f}   {', '.join(f'{r:.1f}' for r in bare[1:])}")
    ratios = [t / b for t, b in zip(trainer[1:], bare[1:], strict=True)]  # back-to-back pairs: less load noise
    print(
        f"trainer / bare: {statistics.median(ratios):.1%} median of the rounds' ratios"
        f" ({', '.join(f'{r:.0%}' for r in ratios)}); of the medians {trainer_speed / bare_speed:.1%} (goal >= 90%)"
    )


if __name__ == "__main__":
    main()
