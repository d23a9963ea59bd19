"""CheXpert as released: `train.csv` / `valid.csv` (and `test.csv` if present) with a `Path` column per image.

Same label schema as MIMIC-CXR-JPG (1, 0, -1 uncertain, blank). `valid.csv` is the official
validation split; without a `test.csv` the test split is carved out of train by patient.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from medcore.record import Task
from trainer.data.manifest import DataError, LabeledData, sha256_file
from trainer.data.samples import SampleList, SplitPlan, assemble
from trainer.data.table import read_table
from trainer.data.uncertainty import check_blank, label_row, parse_uncertainty, select_labels
from trainer.data.validation import Screen

FILES = {"train.csv": "train", "valid.csv": "val", "test.csv": "test"}
_PATIENT = re.compile(r"(patient\d+)")
_SPLIT_FOLDERS = ("train", "valid", "test")


def load_chexpert(
    root: Path,
    *,
    labels: Sequence[str] | None = None,
    uncertainty: str | Mapping[str, str] = "ignore",
    blank: str = "unknown",
    views: Sequence[str] = (),
    plan: SplitPlan | None = None,
    screen: Screen | None = None,
) -> LabeledData:
    """Read the CSVs in `root` (e.g. `CheXpert-v1.0-small/`); image paths resolve inside `root`."""
    plan, screen = plan or SplitPlan(), screen or Screen()
    if not root.is_dir():
        raise DataError(f"CheXpert folder {root} does not exist")
    label_names = select_labels(labels)
    policies = parse_uncertainty(uncertainty, label_names)
    check_blank(blank)
    present = {name: pool for name, pool in FILES.items() if (root / name).is_file()}
    for required in ("train.csv", "valid.csv"):
        if required not in present:
            raise DataError(f"CheXpert file {root / required} does not exist")
    if "test.csv" not in present:
        present["train.csv"] = "train+test"
    samples = SampleList(label_names)
    wanted = {v.upper() for v in views}
    excluded = {"view": 0}
    total = 0
    invalid: list[str] = []
    for name, pool in present.items():
        columns = ("Path", *label_names, *(("Frontal/Lateral", "AP/PA") if views else ()))
        rows = read_table(root / name, columns)
        total += len(rows)
        for row in rows:
            if wanted and _view(row) not in wanted:
                excluded["view"] += 1
                continue
            values = label_row(row, label_names, policies, blank)
            if isinstance(values, str):
                invalid.append(f"{row['Path']} ({values})")
                continue
            match = _PATIENT.search(row["Path"])
            patient = match.group(1) if match else row["Path"]
            samples.add(row["Path"], (_resolve(root, row["Path"]),), values, patient, pool)
    screen.reject("hold a label other than 1, 0, -1 or blank", invalid, total)
    description = {
        "kind": "chexpert",
        "path": str(root.resolve()),
        "files": {name: sha256_file(root / name) for name in present},
        "uncertainty": policies,
        "blank": blank,
        "views": sorted(wanted) or "all",
        "excluded": excluded,
        "official_split": "train and val" if "test.csv" not in present else True,
    }
    return assemble(samples, Task.MULTILABEL, screen, plan, description)


def _view(row: Mapping[str, str]) -> str:
    return "LATERAL" if row["Frontal/Lateral"].lower() == "lateral" else row["AP/PA"].upper()


def _resolve(root: Path, value: str) -> Path:
    """`CheXpert-v1.0-small/train/patient1/...` lives at `root/train/patient1/...`, whatever `root` is called."""
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if parts and parts[0] not in _SPLIT_FOLDERS and len(parts) > 1:
        parts = parts[1:]
    return root.joinpath(*parts)
