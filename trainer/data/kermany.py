"""The Kermany chest X-ray folder layout: `{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg`.

Binary (pneumonia) by default; with `subtypes` the 3-class task normal / bacteria / virus, read
from the Kermany file names (`person12_bacteria_45.jpeg`, `person7_virus_13.jpeg`). The split
folders are the official split; patients come from the file names. Without a `val/` folder (the
Kaggle copies whose val holds 16 images, or none), val is carved out of train by patient,
stratified, seeded (`val_fraction`, `seed`), so a patient's duplicate files stay together.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from medcore.record import Task
from trainer.data.manifest import SPLITS, DataError, LabeledData
from trainer.data.samples import SampleList, SplitPlan, assemble
from trainer.data.validation import Screen

CLASS_FOLDERS = ("NORMAL", "PNEUMONIA")
LABELS = ("pneumonia",)
SUBTYPES = ("normal", "bacteria", "virus")
# Kermany file names carry the patient: person123_virus_45, IM-0001-0001, NORMAL2-IM-1427-0001.
_PATIENT = re.compile(r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)")
_SUBTYPE = re.compile(r"_(bacteria|virus)_", re.IGNORECASE)


def load_kermany(
    root: Path,
    *,
    subtypes: bool = False,
    screen: Screen | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> LabeledData:
    """Index the image files of every split (headers are checked; pixels are read later)."""
    screen = screen or Screen()
    if not root.is_dir():
        raise DataError(f"Kermany folder {root} does not exist")
    samples = SampleList(("normal", "pneumonia") if not subtypes else SUBTYPES)
    unknown: list[str] = []
    carve_val = not (root / "val").is_dir() and (root / "train").is_dir()
    for name in SPLITS:
        if name == "val" and carve_val:
            continue
        pool = "train+val" if name == "train" and carve_val else name
        for class_name, path in _files(root, name):
            row = _row(class_name, path.name, subtypes)
            if row is None:
                unknown.append(f"{name}/{class_name}/{path.name}")
                continue
            match = _PATIENT.match(path.stem)
            # Patient numbers restart in each official folder (SOURCE.md: `person1` of test is not `person1`
            # of train), so ids are kept per folder; val carved out of train shares train's numbering.
            patient = f"{name}/{match.group(1) if match else path.stem}"
            samples.add(f"{name}/{class_name}/{path.name}", (path,), row, patient, pool)
    screen.reject("have no bacteria/virus subtype in the file name", unknown, len(samples) + len(unknown), "files")
    description = {
        "kind": "kermany",
        "path": str(root.resolve()),
        "listing_sha256": hashlib.sha256("\n".join(samples.keys).encode()).hexdigest(),
        "official_split": "train, test (val carved out of train by patient)" if carve_val else True,
        "subtypes": subtypes,
    }
    # test_fraction is unused (test is always the official folder); SplitPlan only checks it.
    plan = SplitPlan(val_fraction=val_fraction, test_fraction=min(0.2, 0.99 - val_fraction), seed=seed)
    return assemble(samples, Task.MULTICLASS if subtypes else Task.BINARY, screen, plan, description)


def _files(root: Path, name: str) -> list[tuple[str, Path]]:
    folder = root / name
    if not folder.is_dir():
        raise DataError(f"Kermany split folder {folder} does not exist; expected {', '.join(SPLITS)} under {root}")
    extra = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in CLASS_FOLDERS)
    if extra:
        raise DataError(f"{folder} holds unexpected folder {extra[0]!r}; allowed: {', '.join(CLASS_FOLDERS)}")
    files: list[tuple[str, Path]] = []
    for class_name in CLASS_FOLDERS:
        class_dir = folder / class_name
        if not class_dir.is_dir():
            raise DataError(f"{folder} has no {class_name} folder; expected {', '.join(CLASS_FOLDERS)}")
        files.extend((class_name, p) for p in sorted(class_dir.iterdir()) if not p.name.startswith(".") and p.is_file())
    if not files:
        raise DataError(f"split {name!r} at {folder} holds no images")
    return files


def _row(class_name: str, file_name: str, subtypes: bool) -> list[float] | None:
    if not subtypes:
        return [1.0, 0.0] if class_name == "NORMAL" else [0.0, 1.0]
    if class_name == "NORMAL":
        return [1.0, 0.0, 0.0]
    match = _SUBTYPE.search(file_name)
    if match is None:
        return None
    return [0.0, 1.0, 0.0] if match.group(1).lower() == "bacteria" else [0.0, 0.0, 1.0]
