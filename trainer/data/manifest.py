"""The common shape every data source produces: per split, images (or files) and a label matrix."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medcore.record import Task

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """A dataset on disk is missing, malformed or holds an unreadable file; the message names it."""


@dataclass(frozen=True)
class LabeledSplit:
    """One split of a dataset.

    Images are held in memory (`images`: uint8 [N, H, W] or [N, H, W, C]), read from one file
    each (`paths`), or stacked from several files per sample (`channel_paths`: one file per
    channel, or one multi-page TIFF). `labels` is float32 [N, L] in the dataset's canonical
    label order; NaN marks a label that is not known for that sample (its loss is masked).
    `patient_ids`, when known, allow patient-level splits; they are never logged.
    """

    name: str
    labels: np.ndarray
    images: np.ndarray | None = None
    paths: tuple[Path, ...] | None = None
    patient_ids: tuple[str, ...] | None = None
    channel_paths: tuple[tuple[Path, ...], ...] | None = None

    def __post_init__(self) -> None:
        if sum(source is not None for source in (self.images, self.paths, self.channel_paths)) != 1:
            raise ValueError(f"split {self.name!r} needs exactly one of images, paths or channel_paths")
        if self.labels.ndim != 2 or self.labels.dtype != np.float32:
            raise ValueError(
                f"split {self.name!r}: labels must be float32 [N, L], got {self.labels.dtype} {list(self.labels.shape)}"
            )
        if self.images is not None and (self.images.dtype != np.uint8 or self.images.ndim not in (3, 4)):
            raise ValueError(
                f"split {self.name!r}: images must be uint8 [N, H, W(, C)], "
                f"got {self.images.dtype} {list(self.images.shape)}"
            )
        count = len(self.images) if self.images is not None else len(self.paths or self.channel_paths or ())
        if count != len(self.labels):
            raise ValueError(f"split {self.name!r} has {count} images but {len(self.labels)} label rows")
        if self.patient_ids is not None and len(self.patient_ids) != count:
            raise ValueError(f"split {self.name!r} has {count} images but {len(self.patient_ids)} patient ids")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> LabeledSplit:
        """The samples at `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            labels=self.labels[idx],
            images=None if self.images is None else self.images[idx],
            paths=None if self.paths is None else tuple(self.paths[i] for i in idx),
            patient_ids=None if self.patient_ids is None else tuple(self.patient_ids[i] for i in idx),
            channel_paths=None if self.channel_paths is None else tuple(self.channel_paths[i] for i in idx),
        )

    def files(self) -> tuple[tuple[Path, ...], ...] | None:
        """Every sample's files (one path, or its channel files); None for in-memory images."""
        if self.channel_paths is not None:
            return self.channel_paths
        return None if self.paths is None else tuple((p,) for p in self.paths)

    def summary(self) -> dict[str, Any]:
        """Counts only (no identifiers): size, positives and unknowns per label column."""
        known = ~np.isnan(self.labels)
        return {
            "n": len(self),
            "positives": [int(v) for v in np.nansum(self.labels, axis=0)],
            "unknown": [int(v) for v in (~known).sum(axis=0)],
        }


@dataclass(frozen=True)
class LabeledData:
    """A whole dataset: the task, the label names in canonical order and the splits."""

    task: Task
    label_names: tuple[str, ...]
    splits: dict[str, LabeledSplit]
    description: dict[str, Any] = field(default_factory=dict)  # for the record's provenance

    def __post_init__(self) -> None:
        for split in self.splits.values():
            if split.labels.shape[1] != len(self.label_names):
                raise ValueError(
                    f"split {split.name!r} has {split.labels.shape[1]} label columns, "
                    f"label names are {list(self.label_names)}"
                )

    def split(self, name: str) -> LabeledSplit:
        if name not in self.splits:
            raise DataError(f"split {name!r} is missing; this dataset has {', '.join(self.splits)}")
        return self.splits[name]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def binary_labels(values: np.ndarray, where: str) -> np.ndarray:
    """0/1 values of any shape [N] or [N, 1] -> float32 [N, 1]; anything else is an error naming `where`."""
    flat = np.asarray(values).reshape(len(values), -1)
    if flat.shape[1] != 1:
        raise DataError(f"{where}: expected one label column for a binary task, got {flat.shape[1]}")
    found = sorted({int(v) for v in np.unique(flat)})
    if not set(found) <= {0, 1}:
        raise DataError(f"{where}: binary labels must be 0 or 1, found values {found}")
    return flat.astype(np.float32)
