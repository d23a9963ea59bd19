"""Training speed: the trainer's own loop against a bare loop, in the same run, on the CPU or CUDA.

    .venv/bin/python bench/train_speed.py [--arch convnext_atto] [--size 128] [--batch-size 32] [--steps 8]
    .venv/bin/python bench/train_speed.py --device cuda --arch convnext_tiny --size 224 --batch-size 128 \\
        --amp-dtype bf16 --channels-last --source synthetic --source cache --kermany ../shared/data/kermany_...224

Trainer rows run `build_run` (model, precision, loss, AdamW, schedule, seeded loader) and `train_one_epoch`:
- `npz` (default): a synthetic PneumoniaMNIST-shaped .npz of random uint8 images, through the medmnist reader and
  the default augmentation;
- `synthetic`: the trainer's loop over random float tensors (a TensorDataset): the loop alone, no data pipeline;
- `cache`: the Kermany folder (--kermany) through its uint8 cache (decoded once, before timing) with the
  recipe's augmentation, --workers loader processes.
Bare: the same network (`build_model`), optimiser (`build_optimizer`), precision (autocast dtype, channels-last)
and batch size, fixed random tensors already on the device, forward + backward + step, nothing else.
Rounds alternate the paths (the first of each is a warm-up); printed: the medians and the median of the per-round
ratios. `--json` also writes the rows for bench/gpu_table.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.config import load_config  # noqa: E402
from trainer.data import load_data, make_dataset  # noqa: E402
from trainer.engine import train_one_epoch  # noqa: E402
from trainer.models import build_model  # noqa: E402
from trainer.optim import build_optimizer  # noqa: E402
from trainer.recipe import resolve_recipe  # noqa: E402
from trainer.run import Run, build_run  # noqa: E402
from trainer.runtime import Precision  # noqa: E402

GOAL = 0.90  # the trainer from the cache against the bare loop (issue 21)


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


def common_overrides(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    return {
        "model.arch": args.arch, "batch_size": args.batch_size, "progress": False, "output_dir": str(folder / "out"),
        "device": args.device, "amp": args.amp_dtype != "none", "amp_dtype": "auto" if args.amp_dtype == "none"
        else args.amp_dtype, "channels_last": args.channels_last, "data.num_workers": args.workers,
        "preprocessing.height": args.size, "preprocessing.width": args.size, "optim.ema_decay": 0.0,
    }  # fmt: skip


def trainer_run(args: argparse.Namespace, folder: Path, source: str) -> Run:
    overrides = common_overrides(args, folder)
    if source == "cache":
        overrides |= {"data.kind": "kermany", "data.path": str(args.kermany), "data.cache": True,
                      "data.cache_dir": str(folder / "cache"), "data.limit": args.steps * args.batch_size,
                      "data.pin_memory": True}  # fmt: skip
        config = load_config(REPO / "configs" / "kermany_default.yaml", overrides)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        path = synthetic_npz(folder, args.size, args.steps * args.batch_size)
        config = load_config(overrides={**overrides, "data.kind": "medmnist", "data.path": str(path)})
    data = load_data(config.data)
    recipe = resolve_recipe(config.preprocessing, data, partial(make_dataset, config=config.data))
    run = build_run(config, data, recipe, None)  # the cache is built here, before any timing
    if source == "synthetic":
        generator = torch.Generator().manual_seed(0)
        count, shape = args.steps * args.batch_size, (run.recipe.channels, args.size, args.size)
        tensors = TensorDataset(torch.randn(count, *shape, generator=generator),
                                torch.randint(0, 2, (count, 1), generator=generator).float())  # fmt: skip
        pin = run.precision.device.type == "cuda"
        run.train_loader = DataLoader(tensors, batch_size=args.batch_size, pin_memory=pin)
    return run


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_rate(run: Run, epoch: int) -> float:
    run.train_sampler.set_epoch(epoch)
    run.train_samples.epoch = epoch
    synchronize(run.precision.device)
    stats = train_one_epoch(run.model, run.criterion, run.optimizer, run.scheduler, run.scaler, run.train_loader,
                            run.precision, progress=False)  # fmt: skip
    return stats.images_per_second  # train_one_epoch reads the loss at its end: the GPU has finished


def bare_rate(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, targets: torch.Tensor,
              steps: int, precision: Precision) -> float:  # fmt: skip
    criterion = nn.BCEWithLogitsLoss()
    model.train()
    synchronize(precision.device)
    start = time.perf_counter()
    for _ in range(steps):
        with precision.autocast():
            loss = criterion(model(images), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(precision.device)
    return steps * len(images) / (time.perf_counter() - start)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="convnext_atto")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="optimiser steps per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each, after one warm-up round")
    parser.add_argument("--workers", type=int, default=0, help="the trainer's DataLoader workers")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index>")
    parser.add_argument("--amp-dtype", choices=("none", "bf16", "fp16"), default="none", help="autocast dtype")
    parser.add_argument("--channels-last", action="store_true", help="channels-last tensors (CUDA's default)")
    parser.add_argument("--source", action="append", choices=("npz", "synthetic", "cache"),
                        help="trainer rows (repeatable; default npz)")  # fmt: skip
    parser.add_argument("--kermany", type=Path, default=REPO.parent / "shared/data/kermany_chest_xray_224")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON (bench/gpu_table.py)")
    return parser


def main(args: argparse.Namespace) -> None:
    sources = args.source or ["npz"]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        runs = {source: trainer_run(args, Path(folder) / source, source) for source in sources}
        first = next(iter(runs.values()))
        precision = first.precision
        model = precision.place(build_model(first.spec))
        optimizer = build_optimizer(model, first.config.optim)
        memory = torch.channels_last if precision.channels_last else torch.contiguous_format
        images = torch.randn(args.batch_size, first.recipe.channels, args.size, args.size)
        images = images.to(precision.device, memory_format=memory)
        targets = torch.randint(0, 2, (args.batch_size, 1)).float().to(precision.device)
        rates: dict[str, list[float]] = {source: [] for source in sources} | {"bare": []}
        for index in range(args.rounds + 1):
            for source, run in runs.items():
                rates[source].append(trainer_rate(run, index))
            rates["bare"].append(bare_rate(model, optimizer, images, targets, args.steps, precision))
    report(args, precision, rates)


def report(args: argparse.Namespace, precision: Precision, rates: dict[str, list[float]]) -> None:
    device = torch.cuda.get_device_name(precision.device) if precision.device.type == "cuda" else platform.machine()
    print(f"machine: {device}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads;"
          f" {args.arch} {args.size}x{args.size}, batch {args.batch_size}, {precision.describe()},"
          f" {args.steps} steps x {args.rounds} rounds, trainer workers {args.workers}")  # fmt: skip
    bare = rates["bare"][1:]
    print(f"{'path':<22}{'img/s':>10}   rounds")
    rows = []
    for name, measured in rates.items():
        timed = measured[1:]
        label = "bare loop" if name == "bare" else f"trainer ({name})"
        print(f"{label:<22}{statistics.median(timed):>10.1f}   {', '.join(f'{r:.1f}' for r in timed)}")
        if name == "bare":
            continue
        ratio = statistics.median(t / b for t, b in zip(timed, bare, strict=True))  # back-to-back pairs
        print(f"  trainer ({name}) / bare: {ratio:.1%} median of the rounds' ratios")
        goal = f">= {GOAL:.0%} of bare" if name == "cache" else ""
        rows.append({
            "section": "training", "what": f"{args.arch} {args.size}px {precision.describe()}, trainer ({name})",
            "value": f"{statistics.median(timed):.0f} img/s", "reference": f"bare loop {statistics.median(bare):.0f}"
            f" img/s ({ratio:.0%})", "goal": goal, "ok": None if not goal else ratio >= GOAL,
        })  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
