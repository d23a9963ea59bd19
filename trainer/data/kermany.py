"""The Kermany chest X-ray folder layout: `{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg`."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medcore.imaging.decode import READABLE_FORMATS
from medcore.record import Task
from trainer.data.manifest import SPLITS, DataError, LabeledData, LabeledSplit

CLASS_FOLDERS = {"NORMAL": 0.0, "PNEUMONIA": 1.0}
LABELS = ("pneumonia",)
# Kermany file names carry the patient: person123_virus_45, IM-0001-0001, NORMAL2-IM-1427-0001.
_PATIENT = re.compile(r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)")


def load_kermany(root: Path) -> LabeledData:
    """Index the image files of every split (headers are checked; pixels are read later)."""
    if not root.is_dir():
        raise DataError(f"Kermany folder {root} does not exist")
    splits = {name: _split(root, name) for name in SPLITS}
    listing = "\n".join(
        f"{split.name}/{p.parent.name}/{p.name}" for split in splits.values() for p in split.paths or ()
    )
    description = {
        "kind": "kermany",
        "path": str(root.resolve()),
        "listing_sha256": hashlib.sha256(listing.encode()).hexdigest(),
    }
    return LabeledData(Task.BINARY, LABELS, splits, description)


def _split(root: Path, name: str) -> LabeledSplit:
    folder = root / name
    if not folder.is_dir():
        raise DataError(f"Kermany split folder {folder} does not exist; expected {', '.join(SPLITS)} under {root}")
    extra = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in CLASS_FOLDERS)
    if extra:
        raise DataError(f"{folder} holds unexpected folder {extra[0]!r}; allowed: {', '.join(CLASS_FOLDERS)}")
    paths: list[Path] = []
    labels: list[float] = []
    for class_name, value in CLASS_FOLDERS.items():
        class_dir = folder / class_name
        if not class_dir.is_dir():
            raise DataError(f"{folder} has no {class_name} folder; expected {', '.join(CLASS_FOLDERS)}")
        files = sorted(p for p in class_dir.iterdir() if not p.name.startswith(".") and p.is_file())
        for path in files:
            _check_image(path)
        paths.extend(files)
        labels.extend([value] * len(files))
    if not paths:
        raise DataError(f"split {name!r} at {folder} holds no images")
    return LabeledSplit(
        name=name,
        labels=np.asarray(labels, dtype=np.float32)[:, None],
        paths=tuple(paths),
        patient_ids=tuple(_patient(p) for p in paths),
    )


def _check_image(path: Path) -> None:
    """Read only the header, so a stray non-image fails now and by name, not mid-epoch."""
    try:
        with Image.open(path) as image:
            found = image.format
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    if found not in READABLE_FORMATS:
        raise DataError(f"image {path} is {found}; readable formats are {', '.join(READABLE_FORMATS)}")


def _patient(path: Path) -> str:
    match = _PATIENT.match(path.stem)
    return match.group(1) if match else path.stem
