"""MedMNIST .npz files: `{split}_images` uint8 [N, H, W(, C)] and `{split}_labels` [N, L]."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcore.record import Task
from trainer.data.manifest import SPLITS, DataError, LabeledData, LabeledSplit, binary_labels, sha256_file

# Positive label of the binary MedMNIST datasets, keyed by the file-name prefix MedMNIST uses.
BINARY_LABELS = {"pneumoniamnist": ("pneumonia",)}


def load_medmnist(path: Path, labels: tuple[str, ...] | None = None) -> LabeledData:
    """Read all three splits of a binary MedMNIST file into memory.

    `labels` names the positive class; by default it is looked up from the file name
    (e.g. `pneumoniamnist*.npz` -> ("pneumonia",)).
    """
    if not path.is_file():
        raise DataError(f"MedMNIST file {path} does not exist")
    label_names = labels or _labels_from_name(path)
    with np.load(path) as archive:
        missing = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels") if f"{s}_{kind}" not in archive]
        if missing:
            raise DataError(
                f"{path} lacks arrays {missing}; a MedMNIST file holds {{train,val,test}}_{{images,labels}}"
            )
        splits = {s: _split(s, archive[f"{s}_images"], archive[f"{s}_labels"], path) for s in SPLITS}
    description = {"kind": "medmnist", "path": str(path.resolve()), "files": {path.name: sha256_file(path)}}
    return LabeledData(Task.BINARY, label_names, splits, description)


def _labels_from_name(path: Path) -> tuple[str, ...]:
    for prefix, names in BINARY_LABELS.items():
        if path.name.startswith(prefix):
            return names
    raise DataError(
        f"cannot tell the label of {path.name}: set data.labels, or name the file after one of "
        f"{', '.join(BINARY_LABELS)}"
    )


def _split(name: str, images: np.ndarray, labels: np.ndarray, path: Path) -> LabeledSplit:
    where = f"{path.name} {name}_labels"
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise DataError(f"{where}: multi-label MedMNIST files are not supported yet; supported task: binary")
    if len(np.unique(labels)) > 2:
        raise DataError(f"{where}: multi-class MedMNIST files are not supported yet; supported task: binary")
    if images.dtype != np.uint8:
        raise DataError(f"{path.name} {name}_images must be uint8, got {images.dtype}")
    return LabeledSplit(name=name, labels=binary_labels(labels, where), images=np.ascontiguousarray(images))
