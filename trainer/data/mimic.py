"""MIMIC-CXR-JPG 2.0.0 as published: `files/p1X/pXXXXXXXX/sYYYYYYYY/<dicom_id>.jpg` and its `.csv.gz` files.

Labels come per study from `mimic-cxr-2.0.0-chexpert.csv.gz` (or `-negbio`); the split per image
from `-split.csv.gz` (train / validate / test, kept as is); `-metadata.csv.gz` gives ViewPosition
for the view filter. -1 (uncertain) follows the per-label policy; blank means not mentioned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from medcore.record import Task
from trainer.data.manifest import DataError, LabeledData, sha256_file
from trainer.data.samples import SampleList, SplitPlan, assemble, official_split
from trainer.data.table import find_file, read_table
from trainer.data.uncertainty import check_blank, label_row, parse_uncertainty, select_labels
from trainer.data.validation import Screen

PREFIX = "mimic-cxr-2.0.0"
LABELERS = ("chexpert", "negbio")
STUDY = ("subject_id", "study_id")


def load_mimic(
    root: Path,
    *,
    labeler: str = "chexpert",
    labels: Sequence[str] | None = None,
    uncertainty: str | Mapping[str, str] = "ignore",
    blank: str = "unknown",
    views: Sequence[str] = (),
    plan: SplitPlan | None = None,
    screen: Screen | None = None,
) -> LabeledData:
    """Read the label, split and (for a view filter) metadata files under `root`; images under `root/files`."""
    plan, screen = plan or SplitPlan(), screen or Screen()
    if labeler not in LABELERS:
        raise ValueError(f"Invalid MIMIC labeler {labeler!r}. Only {', '.join(LABELERS)} are supported.")
    if not root.is_dir():
        raise DataError(f"MIMIC-CXR-JPG folder {root} does not exist")
    label_names = select_labels(labels)
    policies = parse_uncertainty(uncertainty, label_names)
    check_blank(blank)
    label_path = find_file(root, [f"{PREFIX}-{labeler}.csv.gz"], f"MIMIC {labeler} label file")
    split_path = find_file(root, [f"{PREFIX}-split.csv.gz"], "MIMIC split file")
    studies = {(r["subject_id"], r["study_id"]): r for r in read_table(label_path, (*STUDY, *label_names))}
    images = read_table(split_path, ("dicom_id", *STUDY, "split"))
    view_of = _views(root) if views else {}
    wanted = {v.upper() for v in views}
    samples = SampleList(label_names)
    invalid: list[str] = []
    excluded = {"view": 0, "no_label_row": 0}
    for image in images:
        dicom_id, subject, study = image["dicom_id"], image["subject_id"], image["study_id"]
        if wanted and view_of.get(dicom_id, "").upper() not in wanted:
            excluded["view"] += 1
            continue
        study_row = studies.get((subject, study))
        if study_row is None:
            excluded["no_label_row"] += 1  # MIMIC ships a few studies the labelers did not label
            continue
        row = label_row(study_row, label_names, policies, blank)
        if isinstance(row, str):
            invalid.append(f"s{study} ({row})")
            continue
        path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom_id}.jpg"
        samples.add(dicom_id, (path,), row, subject, official_split(image["split"], split_path.name))
    screen.reject("hold a label other than 1, 0, -1 or blank", invalid, len(images), unit="images")
    description = {
        "kind": "mimic",
        "path": str(root.resolve()),
        "labeler": labeler,
        "files": {p.name: sha256_file(p) for p in (label_path, split_path)},
        "uncertainty": policies,
        "blank": blank,
        "views": sorted(wanted) or "all",
        "excluded": excluded,
        "official_split": True,
    }
    return assemble(samples, Task.MULTILABEL, screen, plan, description)


def _views(root: Path) -> dict[str, str]:
    path = find_file(root, [f"{PREFIX}-metadata.csv.gz"], "MIMIC metadata file (needed for the view filter)")
    return {row["dicom_id"]: row["ViewPosition"] for row in read_table(path, ("dicom_id", "ViewPosition"))}
