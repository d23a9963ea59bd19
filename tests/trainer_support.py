"""Helpers for the trainer tests: the real data files and a Kermany folder tree built from real JPEGs."""

from __future__ import annotations

import csv
from pathlib import Path

from data_location import DATA as DATA_ROOT

DATA = DATA_ROOT  # ../shared/data beside the clone, else the sample in tests/data
PNEUMONIAMNIST = DATA / "pneumoniamnist" / "pneumoniamnist_reconstructed_v2_splits.npz"
KERMANY = DATA / "kermany_chest_xray_subset"

# Fast settings for real (short) training runs: a small ConvNeXt at 28x28 on a subset.
QUICK_FLAGS = ["--arch", "convnext_atto", "--stem-stride", "2", "--batch-size", "32", "--no-progress"]


def kermany_files() -> dict[str, list[Path]]:
    """The subset's JPEGs by class folder name, smallest files first (they decode fastest)."""
    with (KERMANY / "labels.csv").open(newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: int(row["bytes"]))
    files: dict[str, list[Path]] = {"NORMAL": [], "PNEUMONIA": []}
    for row in rows:
        files[row["label_name"]].append(KERMANY / row["filename"])
    return files


def make_kermany_tree(root: Path, per_class: dict[str, int]) -> Path:
    """Symlink real images into `root/{split}/{NORMAL,PNEUMONIA}/`, `per_class[split]` of each class."""
    files = kermany_files()
    taken = {name: iter(paths) for name, paths in files.items()}
    for split, count in per_class.items():
        for class_name, paths in taken.items():
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(count):
                source = next(paths)
                (folder / source.name).symlink_to(source)
    return root
