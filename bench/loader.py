"""Loader throughput: decoding JPEGs every epoch against reading the decoded uint8 cache.

    .venv/bin/python bench/loader.py [--size 224] [--epochs 3]

Reads the 215 real full-resolution Kermany JPEGs in ../shared/data through a torch DataLoader
(batch 32) with 0 and 2 workers: (1) full-resolution decode of every file, (2) what the trainer
does without a cache (medcore's decode at a reduced JPEG scale, then resize), (3) from the cache.
Prints the machine, the image sizes and samples/s. Runs in about a minute on two cores.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medcore.imaging import decode_image  # noqa: E402
from medcore.imaging.preprocess import normalize, resize_image  # noqa: E402
from medcore.record import Preprocessing  # noqa: E402
from trainer.data.cache import load_cache  # noqa: E402
from trainer.data.dataset import ManifestDataset  # noqa: E402
from trainer.data.manifest import LabeledSplit  # noqa: E402

KERMANY = REPO.parent / "shared" / "data" / "kermany_chest_xray_subset" / "images"


class FullDecode(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Decode each JPEG at full resolution (no reduced-scale draft), then medcore's resize and normalisation."""

    def __init__(self, split: LabeledSplit, recipe: Preprocessing) -> None:
        self.split, self.recipe = split, recipe

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.split.paths is not None
        image = decode_image(self.split.paths[index].read_bytes(), mode="L")
        pixels = normalize(np.asarray(resize_image(image, self.recipe)), self.recipe)
        return torch.from_numpy(pixels), torch.from_numpy(self.split.labels[index])


def rate(dataset: Dataset[tuple[torch.Tensor, torch.Tensor]], workers: int, epochs: int) -> float:
    """Samples/s over `epochs`, timed from the first batch on (worker start-up is not counted)."""
    loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    start, seen = 0.0, 0
    for epoch in range(epochs):
        for inputs, _labels in loader:
            if epoch == 0 and not start:
                start = time.perf_counter()
                continue
            seen += len(inputs)
    return seen / (time.perf_counter() - start)


def decode_rate(source: Path, side: int, seconds: float = 3.0) -> float:
    """Full decodes per second, on one core, of `source` resized to side x side and saved as a JPEG (quality 95)."""
    buffer = io.BytesIO()
    Image.open(source).convert("L").resize((side, side), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=95)
    data, count, start = buffer.getvalue(), 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        decode_image(data)
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per cache measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = tuple(sorted(KERMANY.glob("*.jpeg")))
    recipe = Preprocessing(height=args.size, width=args.size, channels=1, mean=(0.5,), std=(0.25,))
    split = LabeledSplit("train", np.zeros((len(files), 1), dtype=np.float32), paths=files)
    sides = [Image.open(f).size for f in files]
    pixels = [w * h for w, h in sides]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(
        f"images: {len(files)} Kermany JPEGs, {statistics.median(pixels) / 1e6:.1f} MP median "
        f"({min(sides, key=lambda s: s[0] * s[1])} to {max(sides, key=lambda s: s[0] * s[1])}), "
        f"{sum(f.stat().st_size for f in files) / 1e6:.0f} MB; model input {args.size}x{args.size}"
    )
    largest = max(files, key=lambda f: f.stat().st_size)
    print(f"one core, full decode of a 2048x2048 JPEG (from {largest.name}): {decode_rate(largest, 2048):.0f}/s")
    rows = []
    for workers in (0, 2):
        rows.append(("JPEG, full-resolution decode", workers, rate(FullDecode(split, recipe), workers, 2)))
        rows.append(("JPEG, trainer path (draft decode)", workers, rate(ManifestDataset(split, recipe), workers, 2)))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cached = load_cache(split, recipe, Path(tmp))
        build = time.perf_counter() - start
        size_mb = cached.path.stat().st_size / 1e6
        for workers in (0, 2):
            dataset = ManifestDataset(split, recipe, cache=cached)  # what training uses with data.cache
            rows.append(("uint8 cache (memmap)", workers, rate(dataset, workers, args.epochs)))
    print(
        f"cache build (once, {os.cpu_count()} threads): {build:.1f} s = {len(files) / build:.0f} images/s, "
        f"{size_mb:.1f} MB on disk"
    )
    print(f"\n{'source':36} {'workers':>7} {'samples/s':>10}")
    for name, workers, value in rows:
        print(f"{name:36} {workers:>7} {value:>10.0f}")


if __name__ == "__main__":
    main()
