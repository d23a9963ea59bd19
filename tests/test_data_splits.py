"""Patient-level stratified splits, the leakage check, label counts and weights, and the bad-data screen."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import write_csv

from medcore.record import Task
from trainer.data.describe import without_identifiers
from trainer.data.labels import label_counts, label_weights, names_row
from trainer.data.manifest import DataError, LabeledSplit
from trainer.data.splits import leakage_report, patient_split
from trainer.data.table import find_file, read_table
from trainer.data.validation import Screen


def _synthetic(n_patients: int = 200, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """1-4 images per patient; a rare label (5% of patients) and a common one, some unknown."""
    rng = np.random.default_rng(seed)
    labels, patients = [], []
    for p in range(n_patients):
        rare, common = float(rng.random() < 0.05), float(rng.random() < 0.4)
        for _ in range(rng.integers(1, 5)):
            labels.append([rare, common if rng.random() > 0.1 else math.nan])
            patients.append(f"p{p}")
    return np.asarray(labels, dtype=np.float32), patients


def test_patient_split_keeps_patients_together_is_seeded_and_stratified() -> None:
    labels, patients = _synthetic()
    parts = patient_split(labels, patients, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=7)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(labels)))
    owners = {}
    for name, idx in parts.items():
        for i in idx:
            assert owners.setdefault(patients[i], name) == name
    sizes = {name: len(idx) / len(labels) for name, idx in parts.items()}
    assert sizes == pytest.approx({"train": 0.7, "val": 0.1, "test": 0.2}, abs=0.03)
    rare_total = labels[:, 0].sum()
    for name, idx in parts.items():  # the rare label reaches every split, close to its share
        assert labels[idx, 0].sum() >= 1
        assert labels[idx, 0].sum() / rare_total == pytest.approx(sizes[name], abs=0.12)
    again = patient_split(labels, patients, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=7)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = patient_split(labels, patients, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=8)
    assert not np.array_equal(parts["val"], other["val"])
    with pytest.raises(ValueError, match="sum to 1"):
        patient_split(labels, patients, {"train": 0.7, "val": 0.1}, seed=0)


def test_leakage_report_finds_shared_patients_and_files() -> None:
    labels = np.zeros((2, 1), dtype=np.float32)
    train = LabeledSplit("train", labels, paths=(Path("a.png"), Path("b.png")), patient_ids=("p1", "p2"))
    test = LabeledSplit("test", labels, paths=(Path("c.png"), Path("a.png")), patient_ids=("p2", "p3"))
    report = leakage_report({"train": train, "test": test})
    assert report["patients_in_several_splits"] == 1 and report["duplicates_across_splits"] == 1
    assert report["examples"] == ["c.png (train and test)"]
    clean = leakage_report({"train": train})
    assert clean["patients_in_several_splits"] == 0 and "examples" not in clean


def test_names_rows_counts_and_weights() -> None:
    names = ("Mass", "Nodule", "Effusion")
    assert names_row(["Mass", "Effusion"], names, multilabel=True) == [1.0, 0.0, 1.0]
    assert names_row(["No Finding"], names, multilabel=True) == [0.0, 0.0, 0.0]
    assert names_row(["Masss"], names, multilabel=True) == "Masss"
    assert names_row(["Mass", "Nodule"], names, multilabel=False) == "Mass|Nodule"
    assert all(math.isnan(v) for v in names_row([], names, multilabel=False))  # type: ignore[union-attr]
    labels = np.array([[1, 0, np.nan], [0, 0, 1], [0, np.nan, 1], [0, 0, 0]], dtype=np.float32)
    counts = label_counts(labels, names, Task.MULTILABEL)
    assert counts["Mass"] == {"positive": 1, "negative": 3, "unknown": 0}
    assert counts["Nodule"] == {"positive": 0, "negative": 3, "unknown": 1}
    weights = label_weights(labels, names, Task.MULTILABEL)
    assert weights == {"Mass": 3.0, "Nodule": None, "Effusion": 0.5}
    onehot = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [np.nan, np.nan]], dtype=np.float32)
    assert label_weights(onehot, ("a", "b"), Task.MULTICLASS) == {"a": 4 / 6, "b": 2.0}


def test_screen_message_counts_and_first_offenders() -> None:
    offenders = [f"img{i}.png" for i in range(8)]
    with pytest.raises(DataError) as info:
        Screen().reject("name files that do not exist", offenders, 40)
    message = str(info.value)
    assert message.startswith("8 of 40 rows name files that do not exist: img0.png, img1.png, img2.png")
    assert "(and 3 more)" in message and "skip_bad" in message
    screen = Screen(skip_bad=True)
    screen.reject("name files that do not exist", offenders, 40)
    screen.reject("hold an unknown label", ["line 3 ('Masss')"], 40)
    report = screen.report()
    assert report["skipped"] == 9 and report["reasons"]["hold an unknown label"]["count"] == 1


def test_tables_gzip_bom_and_missing_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "labels.csv.gz", ("a", "b"), [(1, " x ")], gz=True)
    assert read_table(path, ("a", "b")) == [{"a": "1", "b": "x"}]
    (tmp_path / "bom.csv").write_bytes("\ufeffa,b\n1,2\n".encode())
    assert read_table(tmp_path / "bom.csv", ("a",))[0]["a"] == "1"
    with pytest.raises(DataError, match="lacks columns 'c', 'd'; its columns are 'a', 'b'"):
        read_table(path, ("a", "c", "d"))
    (tmp_path / "empty.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="holds no rows"):
        read_table(tmp_path / "empty.csv")
    assert find_file(tmp_path, ["labels.csv"], "labels") == path
    with pytest.raises(DataError, match="no split file under"):
        find_file(tmp_path, ["split.csv.gz"], "split file")


def test_the_record_keeps_counts_but_no_file_names() -> None:
    screen = Screen(skip_bad=True)
    screen.reject("name files that do not exist", ["files/p10/p10000032/s5/a.jpg"], 3)
    description = {"kind": "mimic", "skip_report": screen.report(),
                   "leakage": {"patients_in_several_splits": 1, "examples": ["a.jpg (train and test)"]}}  # fmt: skip
    public = without_identifiers(description)
    assert "p10000032" not in str(public)
    assert public["skip_report"]["reasons"]["name files that do not exist"] == {"count": 1}
    assert public["leakage"] == {"patients_in_several_splits": 1}
    assert "p10000032" in str(description)  # the full report is untouched (written beside the run)
