"""From rows a reader found to a checked, split `LabeledData`: the path every file-based layout shares.

A reader fills a `SampleList` (files, label row, patient, official split if any), rejecting rows
it cannot label through the `Screen`. `assemble` then checks files exist (and their headers),
applies the official split or a patient-level one, refuses empty splits and runs the leakage check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medcore.record import Task
from trainer.data.labels import label_report, to_binary
from trainer.data.manifest import SPLITS, DataError, LabeledData, LabeledSplit
from trainer.data.splits import leakage_report, patient_split
from trainer.data.validation import Screen, missing_files, unreadable_files

# Accepted spellings of split names in label files (MIMIC writes "validate").
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validate": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class SplitPlan:
    """How samples without an official split are divided: fractions of the whole dataset, seeded."""

    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        val, test = self.val_fraction, self.test_fraction
        if not (0 < val < 1 and 0 < test < 1 and val + test < 1):
            raise ValueError(f"val and test fractions must lie in (0, 1) and sum below 1, got {val}, {test}")

    def fractions(self, pool: Sequence[str]) -> dict[str, float]:
        """Shares within a pool of splits (e.g. ("train", "val") for NIH's train_val_list); train takes the rest."""
        wanted = {"val": self.val_fraction, "test": self.test_fraction}
        shares = {name: wanted[name] for name in pool if name != "train"}
        return {"train": 1.0 - sum(shares.values()), **shares} if "train" in pool else _normalise(shares)


def _normalise(shares: dict[str, float]) -> dict[str, float]:
    total = sum(shares.values())
    return {k: v / total for k, v in shares.items()}


@dataclass
class SampleList:
    """Rows read from a layout, before files are checked and splits are made.

    `pool` is the official split ("train"), a set of splits to divide by patient
    ("train+val" for NIH's train_val_list) or "" (no official split: train+val+test).
    With `stacked`, a sample's files (or the pages of its one TIFF) are the channels of one image.
    """

    label_names: tuple[str, ...]
    stacked: bool = False
    keys: list[str] = field(default_factory=list)
    files: list[tuple[Path, ...]] = field(default_factory=list)
    labels: list[Sequence[float]] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    pools: list[str] = field(default_factory=list)

    def add(self, key: str, files: tuple[Path, ...], labels: Sequence[float], patient: str, pool: str = "") -> None:
        self.keys.append(key)
        self.files.append(files)
        self.labels.append(labels)
        self.patients.append(patient)
        self.pools.append(pool)

    def __len__(self) -> int:
        return len(self.keys)

    def without(self, drop: set[int]) -> SampleList:
        keep = [i for i in range(len(self)) if i not in drop]
        return SampleList(
            self.label_names,
            self.stacked,
            [self.keys[i] for i in keep],
            [self.files[i] for i in keep],
            [self.labels[i] for i in keep],
            [self.patients[i] for i in keep],
            [self.pools[i] for i in keep],
        )


def screen_files(samples: SampleList, screen: Screen) -> SampleList:
    """Reject samples whose files do not exist, then (if `screen.verify_images`) those not readable as images."""
    missing = missing_files(samples.files)
    screen.reject("name files that do not exist", [_first_path(samples, i) for i in missing], len(samples))
    samples = samples.without(set(missing))
    if screen.verify_images:
        bad = unreadable_files(samples.files)
        screen.reject("are not readable images", [bad[i] for i in sorted(bad)], len(samples), unit="samples")
        samples = samples.without(set(bad))
    return samples


def _first_path(samples: SampleList, index: int) -> str:
    paths = samples.files[index]
    return str(paths[0]) if len(paths) == 1 else "+".join(p.name for p in paths)


def assemble(
    samples: SampleList,
    task: Task,
    screen: Screen,
    plan: SplitPlan,
    description: Mapping[str, Any],
) -> LabeledData:
    """Check files, split by pool, build the LabeledData (binary: positive column only) with reports."""
    read = len(samples)
    samples = screen_files(samples, screen)
    matrix = np.asarray(samples.labels, dtype=np.float32).reshape(len(samples), len(samples.label_names))
    label_names = samples.label_names
    if task is Task.BINARY and len(label_names) == 2:
        matrix, label_names = to_binary(matrix), label_names[1:]
    indices = _split_indices(samples, matrix, plan)
    splits = {}
    for name in SPLITS:
        idx = indices.get(name, np.zeros(0, dtype=np.int64))
        if len(idx) == 0:
            raise DataError(
                f"split {name!r} holds no samples ({read} rows read, {read - len(samples)} skipped, "
                f"{len(samples)} kept); add data or change the split fractions"
            )
        splits[name] = _make_split(name, samples, matrix, idx)
    report = {
        **description,
        "task": task.value,
        "rows_read": read,
        "skip_report": screen.report(),
        "leakage": leakage_report(splits),
        "label_stats": label_report(splits["train"].labels, label_names, task),
    }
    return LabeledData(task, label_names, splits, report)


def _split_indices(samples: SampleList, matrix: np.ndarray, plan: SplitPlan) -> dict[str, np.ndarray]:
    by_pool: dict[str, list[int]] = {}
    for i, pool in enumerate(samples.pools):
        by_pool.setdefault(pool, []).append(i)
    result: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for pool, members in by_pool.items():
        names = tuple(pool.split("+")) if pool else SPLITS
        unknown = [n for n in names if n not in SPLITS]
        if unknown:
            raise DataError(f"unknown split name {unknown[0]!r}; allowed: {', '.join(SPLIT_ALIASES)}")
        rows = np.asarray(members, dtype=np.int64)
        if len(names) == 1:
            result[names[0]].append(rows)
            continue
        parts = patient_split(matrix[rows], [samples.patients[i] for i in rows], plan.fractions(names), plan.seed)
        for name, part in parts.items():
            result[name].append(rows[part])
    return {name: np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64) for name, parts in result.items()}


def _make_split(name: str, samples: SampleList, matrix: np.ndarray, idx: np.ndarray) -> LabeledSplit:
    files = [samples.files[i] for i in idx]
    patients = tuple(samples.patients[i] for i in idx)
    if not samples.stacked:
        return LabeledSplit(name=name, labels=matrix[idx], paths=tuple(f[0] for f in files), patient_ids=patients)
    return LabeledSplit(name=name, labels=matrix[idx], channel_paths=tuple(files), patient_ids=patients)


def official_split(value: str, where: str) -> str:
    """A split name from a label file, normalised (validate -> val); unknown names are an error."""
    name = SPLIT_ALIASES.get(value.strip().lower())
    if name is None:
        raise DataError(f"{where}: unknown split {value!r}; allowed: {', '.join(SPLIT_ALIASES)}")
    return name
