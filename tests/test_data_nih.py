"""NIH ChestX-ray14 reader on a fixture in its own layout, built from real images with their real labels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import NIH_HEADER, build_nih, covid_images, kermany_images, write_csv

from trainer.data.manifest import DataError
from trainer.data.nih import NIH_LABELS, load_nih
from trainer.data.samples import SplitPlan
from trainer.data.validation import Screen


@pytest.fixture
def images(shared_data: Path) -> list:
    return kermany_images(shared_data) + covid_images(shared_data)


def _names(split) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.name for p in split.paths]


def test_official_lists_give_test_and_val_is_carved_by_patient(tmp_path: Path, images: list) -> None:
    root = build_nih(tmp_path / "nih", images)
    data = load_nih(root, plan=SplitPlan(val_fraction=0.2, seed=3))
    assert data.task.value == "multilabel"
    assert data.label_names == NIH_LABELS
    test_list = set((root / "test_list.txt").read_text().split())
    assert set(_names(data.split("test"))) == test_list
    assert not set(_names(data.split("train"))) & test_list and not set(_names(data.split("val"))) & test_list
    assert sum(len(s) for s in data.splits.values()) == len(images)
    patients = {name: set(s.patient_ids or ()) for name, s in data.splits.items()}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert data.description["leakage"]["patients_in_several_splits"] == 0
    # Real labels: "Pneumonia" for every pneumonia image, "No Finding" rows all negative.
    column = NIH_LABELS.index("Pneumonia")
    all_labels = np.concatenate([s.labels for s in data.splits.values()])
    assert all_labels[:, column].sum() == sum(im.pneumonia for im in images)
    assert np.delete(all_labels, column, axis=1).sum() == 0 and not np.isnan(all_labels).any()
    assert data.description["label_stats"]["Pneumonia"]["positive"] == int(data.split("train").labels[:, column].sum())


def test_split_is_seeded(tmp_path: Path, images: list) -> None:
    root = build_nih(tmp_path / "nih", images)
    first = load_nih(root, plan=SplitPlan(seed=1))
    again = load_nih(root, plan=SplitPlan(seed=1))
    assert _names(first.split("val")) == _names(again.split("val"))


def test_flat_images_folder_and_sample_release(tmp_path: Path, images: list) -> None:
    root = build_nih(tmp_path / "sample", images, nested=False, sample=True)
    data = load_nih(root, plan=SplitPlan(val_fraction=0.15, test_fraction=0.25, seed=0))
    assert data.description["official_split"] is False
    assert sum(len(s) for s in data.splits.values()) == len(images)
    owners = {}
    for name, split in data.splits.items():
        for patient in split.patient_ids or ():
            assert owners.setdefault(patient, name) == name, "a patient landed in two splits"


def test_view_filter(tmp_path: Path, images: list) -> None:
    data = load_nih(build_nih(tmp_path / "nih", images), views=["AP"], plan=SplitPlan(val_fraction=0.3))
    kept = sum(len(s) for s in data.splits.values())
    assert kept == sum(im.view.startswith("AP") for im in images)
    assert data.description["excluded"]["view"] == len(images) - kept


def test_multiple_findings_split_on_pipe(tmp_path: Path, images: list) -> None:
    # The real images carry one finding each; this row's second finding is set by the test to exercise "|".
    root = build_nih(tmp_path / "nih", images)
    table = (root / "Data_Entry_2017.csv").read_text().splitlines()
    first = table[1].split(",")
    first[1] = "Pneumonia|Infiltration"
    (root / "Data_Entry_2017.csv").write_text("\n".join([table[0], ",".join(first), *table[2:]]) + "\n")
    data = load_nih(root)
    split = next(s for s in data.splits.values() if first[0] in _names(s))
    row = split.labels[_names(split).index(first[0])]
    assert row[NIH_LABELS.index("Pneumonia")] == 1 and row[NIH_LABELS.index("Infiltration")] == 1
    assert row.sum() == 2 and not any(math.isnan(v) for v in row)


def test_missing_files_fail_with_count_and_names_or_skip_with_report(tmp_path: Path, images: list) -> None:
    root = build_nih(tmp_path / "nih", images)
    gone = sorted(root.glob("images_001/images/*.png"))[:3]
    for path in gone:
        path.unlink()
    with pytest.raises(DataError, match=rf"3 of {len(images)} rows name files that do not exist: .*{gone[0].name}"):
        load_nih(root)
    screen = Screen(skip_bad=True)
    data = load_nih(root, screen=screen)
    assert sum(len(s) for s in data.splits.values()) == len(images) - 3
    report = data.description["skip_report"]
    assert report["skipped"] == 3
    assert {Path(p).name for p in report["reasons"]["name files that do not exist"]["first"]} == {p.name for p in gone}


def test_unreadable_image_and_unknown_label(tmp_path: Path, images: list) -> None:
    root = build_nih(tmp_path / "nih", images)
    victim = sorted(root.glob("images_002/images/*.png"))[0]
    victim.unlink()
    victim.write_text("not an image")
    with pytest.raises(DataError, match=rf"1 of {len(images)} samples are not readable images: {victim.name}"):
        load_nih(root)
    table = root / "Data_Entry_2017.csv"
    table.write_text(table.read_text().replace("No Finding", "No Findings", 1))  # a typo the test introduces
    with pytest.raises(DataError, match=r"1 of \d+ rows name a label outside the 14 NIH labels.*'No Findings'"):
        load_nih(root)


def test_missing_column_lists_and_rows(tmp_path: Path, images: list) -> None:
    root = build_nih(tmp_path / "nih", images)
    header = [c for c in NIH_HEADER if c != "Patient ID"]
    write_csv(tmp_path / "bad.csv", header, [["a.png", "No Finding", 0, 5, "M", "PA", 1, 1, 1, 1]])
    with pytest.raises(DataError, match=r"bad\.csv lacks column 'Patient ID'"):
        load_nih(root, labels_file=tmp_path / "bad.csv")
    (root / "test_list.txt").unlink()
    with pytest.raises(DataError, match=r"has train_val_list\.txt but not test_list\.txt"):
        load_nih(root)


def test_empty_split_is_an_error(tmp_path: Path, images: list) -> None:
    root = build_nih(tmp_path / "nih", images)
    names = (root / "test_list.txt").read_text().split()
    for path in root.glob("images_*/images/*.png"):
        if path.name in names:
            path.unlink()
    with pytest.raises(DataError, match="split 'test' holds no samples"):
        load_nih(root, screen=Screen(skip_bad=True))
