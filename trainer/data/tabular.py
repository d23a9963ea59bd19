"""The user's own CSV: a path column (or one per channel) and labels as one name, several names or multi-hot columns.

    path,label                    -> multi-class (binary with two classes: the second is positive)
    path,labels  a.png,"Mass|Nodule"  -> multi-label names ("No Finding" alone: all negative)
    path,Mass,Nodule  a.png,1,0     -> multi-hot columns (1, 0, -1 uncertain, blank unknown)

Optional columns: `patient_id` (split by patient; otherwise each image is its own patient) and
`split` (train / val / test, kept as the official split). Paths are relative to the CSV's folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from medcore.record import Task
from trainer.data.labels import names_row
from trainer.data.manifest import DataError, LabeledData, sha256_file
from trainer.data.samples import SampleList, SplitPlan, assemble, official_split
from trainer.data.table import read_table
from trainer.data.uncertainty import label_row, parse_uncertainty
from trainer.data.validation import Screen

TASKS = ("auto", "binary", "multiclass", "multilabel")
# Looked for in this order when `patient_column` is not given (patientid: the COVID-19 image data collection).
PATIENT_COLUMNS = ("patient_id", "patient", "patientid", "PatientID", "Patient ID", "subject_id")
SPLIT_COLUMN = "split"


def load_csv(
    path: Path,
    *,
    path_columns: Sequence[str] = ("path",),
    label_column: str | None = "label",
    label_columns: Sequence[str] = (),
    task: str = "auto",
    labels: Sequence[str] | None = None,
    separator: str = "|",
    uncertainty: str | Mapping[str, str] = "ignore",
    image_root: Path | None = None,
    stacked: bool | None = None,
    plan: SplitPlan | None = None,
    screen: Screen | None = None,
    kind: str = "csv",
    patient_column: str | None = None,
) -> LabeledData:
    """Read a label CSV; with several `path_columns` (or `stacked`) a sample's files are the channels of one image."""
    plan, screen = plan or SplitPlan(), screen or Screen()
    if task not in TASKS:
        raise ValueError(f"Invalid task {task!r}. Only {', '.join(TASKS)} are supported.")
    label_source = tuple(label_columns) or ((label_column,) if label_column else ())
    if not label_source:
        raise ValueError("name a label column (label_column) or multi-hot columns (label_columns)")
    rows = read_table(path, (*path_columns, *label_source))
    columns = set(rows[0])
    if patient_column is not None and patient_column not in columns:
        raise DataError(f"{path.name} has no patient column {patient_column!r}; its columns: {', '.join(rows[0])}")
    patient_column = patient_column or next((c for c in PATIENT_COLUMNS if c in columns), None)
    base = image_root or path.parent
    if label_columns:
        resolved, names, cells = _multi_hot(rows, tuple(label_columns), task, uncertainty)
    else:
        resolved, names, cells = _named(rows, str(label_column), task, labels, separator)
    samples = SampleList(names, stacked=len(path_columns) > 1 if stacked is None else stacked)
    bad: list[str] = []
    for number, (row, cell) in enumerate(zip(rows, cells, strict=True), start=2):  # line 1 is the header
        if isinstance(cell, str):
            bad.append(f"line {number} ({cell!r})")
            continue
        files = tuple(base / row[c] for c in path_columns)
        empty = [c for c in path_columns if not row[c]]
        if empty:
            bad.append(f"line {number} (empty {empty[0]!r})")
            continue
        patient = row[patient_column] if patient_column and row[patient_column] else "+".join(map(str, files))
        pool = official_split(row[SPLIT_COLUMN], f"{path.name} line {number}") if SPLIT_COLUMN in columns else ""
        samples.add(row[path_columns[0]], files, cell, patient, pool)
    screen.reject(f"hold an unknown or invalid label (labels: {', '.join(names)})", bad, len(rows))
    description = {
        "kind": kind,
        "path": str(path.resolve()),
        "files": {path.name: sha256_file(path)},
        "patients": patient_column or "not given: each image is its own patient",
        "official_split": SPLIT_COLUMN in columns,
        "channels": list(path_columns) if len(path_columns) > 1 else None,
    }
    return assemble(samples, resolved, screen, plan, description)


def _named(
    rows: list[dict[str, str]], column: str, task: str, labels: Sequence[str] | None, separator: str
) -> tuple[Task, tuple[str, ...], list[list[float] | str]]:
    split = [[n.strip() for n in row[column].split(separator) if n.strip()] for row in rows]
    several = any(len(names) > 1 for names in split)
    resolved = Task(task) if task != "auto" else Task.MULTILABEL if several else None
    found = sorted({n for names in split for n in names})
    if resolved is Task.MULTILABEL:
        found = [n for n in found if n.lower() != "no finding"]
    names = classes_in_order(found, labels) if resolved is not Task.MULTILABEL else tuple(labels or found)
    if resolved is None:
        resolved = Task.BINARY if len(names) == 2 else Task.MULTICLASS
    _check_classes(resolved, names)
    multilabel = resolved is Task.MULTILABEL
    return resolved, names, [names_row(n, names, multilabel=multilabel) for n in split]


def _multi_hot(
    rows: list[dict[str, str]], columns: tuple[str, ...], task: str, uncertainty: str | Mapping[str, str]
) -> tuple[Task, tuple[str, ...], list[list[float] | str]]:
    resolved = Task.BINARY if len(columns) == 1 else Task.MULTILABEL
    if task not in ("auto", resolved.value):
        raise DataError(f"{len(columns)} multi-hot label column(s) make a {resolved.value} task, not {task}")
    policies = parse_uncertainty(uncertainty, columns)
    return resolved, columns, [label_row(row, columns, policies, "unknown") for row in rows]


def _check_classes(task: Task, names: tuple[str, ...]) -> None:
    if task is Task.BINARY and len(names) != 2:
        raise DataError(f"a binary task from a name column needs two classes (negative, positive), got {list(names)}")
    if task is Task.MULTICLASS and len(names) < 2:
        raise DataError(f"a multi-class task needs at least two classes, got {list(names)}")
    if not names:
        raise DataError("the label column names no labels")


def classes_in_order(found: Sequence[str], labels: Sequence[str] | None) -> tuple[str, ...]:
    """The classes in `labels` order, else sorted. One given label with two classes found names the
    positive class of a binary task (as a binary model's record does): (the other class, that label)."""
    if labels and len(labels) == 1 and len(found) == 2 and labels[0] in found:
        return (next(name for name in found if name != labels[0]), labels[0])
    return tuple(labels) if labels else tuple(sorted(found))
