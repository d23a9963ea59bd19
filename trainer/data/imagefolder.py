"""The ImageFolder layout: `root/<class>/...` or `root/{train,val,test}/<class>/...`.

Classes are the folder names, sorted (or as listed in `labels`); two classes make a binary task
whose second class is the positive one. Split folders are kept as the official split (a missing
val or test is carved out of train); without them the images are split by patient, here the file
name (no patient ids in this layout, so each image is its own patient).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from medcore.record import Task
from trainer.data.labels import names_row
from trainer.data.manifest import DataError, LabeledData
from trainer.data.samples import SampleList, SplitPlan, assemble
from trainer.data.tabular import classes_in_order
from trainer.data.validation import Screen

SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def class_entries(root: Path) -> list[tuple[str, str, Path]]:
    """(pool, class, entry) for every non-hidden entry of every class folder, in sorted order."""
    if not root.is_dir():
        raise DataError(f"folder {root} does not exist")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    splits = {SPLIT_FOLDERS[p.name.lower()]: p for p in folders if p.name.lower() in SPLIT_FOLDERS}
    if splits and len(splits) != len(folders):
        other = next(p.name for p in folders if p.name.lower() not in SPLIT_FOLDERS)
        raise DataError(f"{root} mixes split folders with {other!r}; use {{train,val,test}}/<class>/ or <class>/ only")
    if splits and "train" not in splits:
        raise DataError(f"{root} has split folders {sorted(splits)} but no train folder")
    missing = [name for name in ("val", "test") if name not in splits]
    layout = dict(splits) if splits else {"": root}
    entries: list[tuple[str, str, Path]] = []
    for split, folder in layout.items():
        pool = "+".join(["train", *missing]) if split == "train" and missing else split
        for class_dir in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
            if not class_dir.is_dir():
                raise DataError(f"{class_dir} is a file; expected one folder per class in {folder}")
            entries.extend((pool, class_dir.name, e) for e in sorted(class_dir.iterdir()) if not e.name.startswith("."))
    if not entries:
        raise DataError(f"{root} holds no class folders with files")
    return entries


def load_imagefolder(
    root: Path,
    *,
    labels: Sequence[str] | None = None,
    plan: SplitPlan | None = None,
    screen: Screen | None = None,
) -> LabeledData:
    """Index every image below the class folders (nested folders are walked); headers are checked."""
    plan, screen = plan or SplitPlan(), screen or Screen()
    entries = [
        (pool, name, file)
        for pool, name, entry in class_entries(root)
        for file in ([entry] if entry.is_file() else sorted(f for f in entry.rglob("*") if f.is_file()))
        if not file.name.startswith(".")
    ]
    classes = classes_in_order(sorted({name for _, name, _ in entries}), labels)
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class folder(s) {list(classes)}; at least two are needed")
    samples = SampleList(classes)
    unknown: list[str] = []
    for pool, name, file in entries:
        row = names_row([name], classes, multilabel=False)
        if isinstance(row, str):
            unknown.append(str(file.relative_to(root)))
            continue
        samples.add(str(file.relative_to(root)), (file,), row, str(file.relative_to(root)), pool)
    screen.reject(f"lie in a class folder not among the labels {list(classes)}", unknown, len(entries), unit="files")
    listing = "\n".join(samples.keys)
    description = {
        "kind": "imagefolder",
        "path": str(root.resolve()),
        "listing_sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "official_split": any(pool for pool in samples.pools),
        "patients": "not given: each image is its own patient",
    }
    task = Task.BINARY if len(classes) == 2 else Task.MULTICLASS
    return assemble(samples, task, screen, plan, description)
