"""MedMNIST .npz files: `{split}_images` uint8 [N, H, W(, C)] and `{split}_labels` [N, L].

Binary (PneumoniaMNIST, [N, 1] of 0/1), multi-class ([N, 1] of class indices, e.g. PathMNIST)
and multi-label (ChestMNIST, [N, 14] of 0/1). Label names come from the file name (the
MedMNIST dataset names below) or from `labels`: one name is the positive class of a binary
task, several are the classes (or, with several label columns, the labels) in index order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcore.record import Task
from trainer.data.labels import label_report
from trainer.data.manifest import SPLITS, DataError, LabeledData, LabeledSplit, binary_labels, sha256_file
from trainer.data.nih import NIH_LABELS
from trainer.data.splits import leakage_report

# Label names in MedMNIST's index order (medmnist INFO), keyed by the file-name prefix MedMNIST uses.
KNOWN_LABELS: dict[str, tuple[str, ...]] = {
    "pneumoniamnist": ("pneumonia",),  # binary: the positive class
    "chestmnist": tuple(name.lower().replace("pleural_thickening", "pleural") for name in NIH_LABELS),
    "pathmnist": ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "bloodmnist": ("basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte", "monocyte",
                   "neutrophil", "platelet"),
}  # fmt: skip


def load_medmnist(path: Path, labels: tuple[str, ...] | None = None) -> LabeledData:
    """Read all three splits of a MedMNIST file into memory; the task follows the label array's shape."""
    if not path.is_file():
        raise DataError(f"MedMNIST file {path} does not exist")
    label_names = labels or _labels_from_name(path)
    with np.load(path) as archive:
        missing = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels") if f"{s}_{kind}" not in archive]
        if missing:
            expected = "{train,val,test}_{images,labels}"
            raise DataError(f"{path} lacks arrays {missing}; a MedMNIST file holds {expected}")
        columns = archive["train_labels"].reshape(len(archive["train_labels"]), -1).shape[1]
        task = Task.MULTILABEL if columns > 1 else Task.BINARY if len(label_names) == 1 else Task.MULTICLASS
        if task is Task.MULTILABEL and columns != len(label_names):
            raise DataError(f"{path.name} has {columns} label columns but {len(label_names)} label names")
        splits = {s: _split(s, archive[f"{s}_images"], archive[f"{s}_labels"], path, task, label_names) for s in SPLITS}
    description = {
        "kind": "medmnist",
        "path": str(path.resolve()),
        "files": {path.name: sha256_file(path)},
        "official_split": True,
        "leakage": leakage_report(splits),
        "label_stats": label_report(splits["train"].labels, label_names, task),
    }
    return LabeledData(task, label_names, splits, description)


def _labels_from_name(path: Path) -> tuple[str, ...]:
    for prefix, names in KNOWN_LABELS.items():
        if path.name.startswith(prefix):
            return names
    raise DataError(
        f"cannot tell the label names of {path.name}: set data.labels, or name the file after one of "
        f"{', '.join(KNOWN_LABELS)}"
    )


def _split(
    name: str, images: np.ndarray, labels: np.ndarray, path: Path, task: Task, label_names: tuple[str, ...]
) -> LabeledSplit:
    where = f"{path.name} {name}_labels"
    if images.dtype != np.uint8:
        raise DataError(f"{path.name} {name}_images must be uint8, got {images.dtype}")
    flat = np.asarray(labels).reshape(len(labels), -1)
    if task is Task.BINARY:
        matrix = binary_labels(flat, where)
    elif task is Task.MULTILABEL:
        found = sorted({int(v) for v in np.unique(flat)})
        if not set(found) <= {0, 1}:
            raise DataError(f"{where}: multi-label values must be 0 or 1, found {found}")
        matrix = flat.astype(np.float32)
    else:
        bad = sorted({int(v) for v in np.unique(flat) if not 0 <= v < len(label_names)})
        if bad:
            count = len(label_names)
            raise DataError(f"{where}: class indices {bad[:5]} lie outside 0..{count - 1} ({count} label names)")
        matrix = np.eye(len(label_names), dtype=np.float32)[flat[:, 0].astype(np.int64)]
    return LabeledSplit(name=name, labels=matrix, images=np.ascontiguousarray(images))
