"""NIH ChestX-ray14 as released: `Data_Entry_2017(_v2020).csv`, the official lists, flat or `images_0NN/images/`.

"Finding Labels" holds names joined by `|`; "No Finding" alone means all 14 labels negative. The
official `test_list.txt` is the test split; val is carved out of `train_val_list.txt` by patient
(seeded, stratified). The 5,606-image sample release (`sample_labels.csv`, no lists) is split by patient.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from medcore.record import Task
from trainer.data.labels import names_row
from trainer.data.manifest import DataError, LabeledData, sha256_file
from trainer.data.samples import SampleList, SplitPlan, assemble
from trainer.data.table import read_list, read_table
from trainer.data.validation import Screen, first_few

NIH_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
LABEL_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv", "sample_labels.csv")
LISTS = {"train+val": "train_val_list.txt", "test": "test_list.txt"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
COLUMNS = ("Image Index", "Finding Labels", "Patient ID")


def load_nih(
    root: Path,
    *,
    labels_file: Path | None = None,
    views: Sequence[str] = (),
    plan: SplitPlan | None = None,
    screen: Screen | None = None,
) -> LabeledData:
    """Read the label file and lists under `root`; images anywhere below it (found by file name)."""
    plan, screen = plan or SplitPlan(), screen or Screen()
    if not root.is_dir():
        raise DataError(f"NIH folder {root} does not exist")
    table_path = labels_file or _label_file(root)
    rows = read_table(table_path, COLUMNS + (("View Position",) if views else ()))
    pools = _official_pools(root, rows, table_path.name)
    images = index_images(root)
    samples = SampleList(NIH_LABELS)
    unknown: list[str] = []
    excluded = {"view": 0}
    wanted_views = {v.upper() for v in views}
    outside: list[str] = []
    for row in rows:
        name = row["Image Index"]
        if wanted_views and row["View Position"].upper() not in wanted_views:
            excluded["view"] += 1
            continue
        pool = pools.get(name, "") if pools is not None else ""
        if pools is not None and not pool:
            outside.append(name)
            continue
        findings = [n.strip() for n in row["Finding Labels"].split("|") if n.strip()]
        label_row = names_row(findings, NIH_LABELS, multilabel=True)
        if isinstance(label_row, str):
            unknown.append(f"{name} ({label_row!r})")
            continue
        path = images.get(name, root / "images" / name)
        samples.add(name, (path,), label_row, row["Patient ID"], pool)
    screen.reject(f"name a label outside the 14 NIH labels ({', '.join(NIH_LABELS)})", unknown, len(rows))
    screen.reject("are in neither official list", outside, len(rows))
    description = {
        "kind": "nih",
        "path": str(root.resolve()),
        "files": {table_path.name: sha256_file(table_path)},
        "official_split": pools is not None,
        "views": sorted(wanted_views) or "all",
        "excluded": excluded,
    }
    return assemble(samples, Task.MULTILABEL, screen, plan, description)


def _label_file(root: Path) -> Path:
    for name in LABEL_FILES:
        if (root / name).is_file():
            return root / name
    raise DataError(f"no NIH label file under {root}; looked for {', '.join(LABEL_FILES)}")


def _official_pools(root: Path, rows: list[dict[str, str]], table_name: str) -> dict[str, str] | None:
    """Image name -> pool from the official lists; None for the sample release (no lists)."""
    present = {pool: root / name for pool, name in LISTS.items() if (root / name).is_file()}
    if not present:
        return None
    if len(present) == 1:
        (found,) = present.values()
        missing = next(name for name in LISTS.values() if not (root / name).is_file())
        raise DataError(f"{root} has {found.name} but not {missing}; keep both official lists, or neither")
    pools: dict[str, str] = {}
    for pool, path in present.items():
        for name in read_list(path):
            pools[name] = pool
    known = {row["Image Index"] for row in rows}
    orphans = sorted(name for name in pools if name not in known)
    if orphans:
        raise DataError(
            f"{len(orphans)} of {len(pools)} images in the official lists have no row in {table_name}: "
            f"{first_few(orphans)}"
        )
    return pools


def index_images(root: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """File name -> path for every image below `root` (flat `images/`, `images_001/images/`, ...)."""
    found: dict[str, Path] = {}
    duplicates: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.lower().endswith(tuple(suffixes)):
                if name in found:
                    duplicates.append(name)
                found[name] = Path(folder) / name
    if duplicates:
        raise DataError(
            f"{len(duplicates)} image file names occur in more than one folder under {root}: "
            f"{', '.join(duplicates[:5])}; keep one copy of each"
        )
    return found
