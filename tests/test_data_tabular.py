"""The user's own CSV (one name, several names, multi-hot columns) and the ImageFolder layout, on real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_fixtures import RealImage, build_kermany, covid_images, kermany_images, link, write_csv

from medcore.record import Task
from trainer.data.imagefolder import load_imagefolder
from trainer.data.manifest import DataError
from trainer.data.samples import SplitPlan
from trainer.data.tabular import load_csv
from trainer.data.validation import Screen


@pytest.fixture
def images(shared_data: Path) -> list[RealImage]:
    return kermany_images(shared_data) + covid_images(shared_data)


def _class(image: RealImage) -> str:
    if not image.pneumonia:
        return "normal"
    if image.split:
        return "viral"  # every Kermany pneumonia image in the subset is viral
    return "covid" if image.finding.startswith("COVID-19") else "other pneumonia"


def _write(root: Path, images: list[RealImage], header: tuple[str, ...], cells: list[tuple[object, ...]]) -> Path:
    for i, image in enumerate(images):
        link(image.source, root / "img" / f"{i:03d}{image.source.suffix}")
    rows = [(f"img/{i:03d}{im.source.suffix}", *row) for i, (im, row) in enumerate(zip(images, cells, strict=True))]
    return write_csv(root / "labels.csv", ("path", *header), rows)


def test_one_name_per_row_is_multiclass_split_by_patient(tmp_path: Path, images: list[RealImage]) -> None:
    path = _write(tmp_path, images, ("label", "patient_id"), [(_class(im), im.patient) for im in images])
    data = load_csv(path, plan=SplitPlan(seed=5))
    assert data.task is Task.MULTICLASS
    assert data.label_names == ("covid", "normal", "other pneumonia", "viral")
    labels = np.concatenate([s.labels for s in data.splits.values()])
    assert (labels.sum(axis=1) == 1).all()
    assert labels.sum(axis=0).tolist() == [sum(_class(im) == c for im in images) for c in data.label_names]
    assert data.description["leakage"]["patients_in_several_splits"] == 0
    assert data.description["label_stats"]["normal"]["class_weight"] > 0


def test_two_names_make_a_binary_task_with_the_second_positive(tmp_path: Path, images: list[RealImage]) -> None:
    cells = [("pneumonia" if im.pneumonia else "normal", im.split or "train") for im in images]
    path = _write(tmp_path, images, ("label", "split"), cells)
    data = load_csv(path)
    assert data.task is Task.BINARY and data.label_names == ("pneumonia",)
    assert data.description["official_split"] is True
    assert len(data.split("test")) == sum(im.split == "test" for im in images)
    reverse = load_csv(path, labels=["pneumonia", "normal"])
    assert reverse.label_names == ("normal",)
    # One name, as a binary model's record gives it: the positive class.
    assert load_csv(path, labels=["pneumonia"]).label_names == ("pneumonia",)
    assert load_csv(path, labels=["normal"]).label_names == ("normal",)


def test_several_names_are_multilabel(tmp_path: Path, images: list[RealImage]) -> None:
    covid = [im for im in images if not im.split]
    # The collection's own finding "COVID-19, ARDS" names two findings.
    cells = [("|".join(n.strip() for n in im.finding.split(",")), im.patient) for im in covid]
    path = _write(tmp_path, covid, ("labels", "patient_id"), cells)
    data = load_csv(path, label_column="labels", plan=SplitPlan(val_fraction=0.25, test_fraction=0.25))
    assert data.task is Task.MULTILABEL and "ARDS" in data.label_names and "No Finding" not in data.label_names
    labels = np.concatenate([s.labels for s in data.splits.values()])
    assert labels.sum() == sum(len(im.finding.split(",")) for im in covid if im.pneumonia)
    assert (labels.sum(axis=1) == 0).sum() == sum(not im.pneumonia for im in covid)  # "No Finding": all negative


def test_multi_hot_columns(tmp_path: Path, images: list[RealImage]) -> None:
    cells = [(int(im.pneumonia), "" if im.split else int(im.finding.startswith("COVID-19"))) for im in images]
    path = _write(tmp_path, images, ("pneumonia", "covid"), cells)  # Kermany images: COVID unknown (blank)
    data = load_csv(path, label_columns=["pneumonia", "covid"])
    assert data.task is Task.MULTILABEL and data.label_names == ("pneumonia", "covid")
    labels = np.concatenate([s.labels for s in data.splits.values()])
    assert np.isnan(labels[:, 1]).sum() == sum(bool(im.split) for im in images)
    assert data.description["patients"].startswith("not given")
    single = load_csv(path, label_columns=["pneumonia"])
    assert single.task is Task.BINARY


def test_csv_errors(tmp_path: Path, images: list[RealImage]) -> None:
    path = _write(tmp_path, images, ("label",), [(_class(im),) for im in images])
    with pytest.raises(DataError, match="lacks column 'diagnosis'"):
        load_csv(path, label_column="diagnosis")
    with pytest.raises(DataError, match=r"\d+ of \d+ rows hold an unknown or invalid label .*'covid'"):
        load_csv(path, labels=["normal", "viral", "other pneumonia"])
    skipped = load_csv(path, labels=["normal", "viral", "other pneumonia"], screen=Screen(skip_bad=True))
    covid = sum(_class(im) == "covid" for im in images)
    assert skipped.description["skip_report"]["skipped"] == covid
    (tmp_path / "img" / "000.jpeg").unlink()
    with pytest.raises(DataError, match=r"1 of \d+ rows name files that do not exist: .*000\.jpeg"):
        load_csv(path)


def test_imagefolder_with_split_folders(tmp_path: Path, images: list[RealImage]) -> None:
    root = build_kermany(tmp_path / "chest_xray", images)
    data = load_imagefolder(root)
    assert data.task is Task.BINARY and data.label_names == ("PNEUMONIA",)
    assert load_imagefolder(root, labels=["PNEUMONIA"]).label_names == ("PNEUMONIA",)
    assert {n: len(s) for n, s in data.splits.items()} == {
        n: sum(im.split == n for im in images) for n in ("train", "val", "test")
    }


def test_imagefolder_without_splits_and_bad_files(tmp_path: Path, images: list[RealImage]) -> None:
    root = tmp_path / "folders"
    for i, image in enumerate(images):
        link(image.source, root / _class(image) / f"{i:03d}{image.source.suffix}")
    data = load_imagefolder(root, plan=SplitPlan(seed=2))
    assert data.task is Task.MULTICLASS and data.label_names == ("covid", "normal", "other pneumonia", "viral")
    assert sum(len(s) for s in data.splits.values()) == len(images)
    (root / "normal" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"1 of \d+ samples are not readable images: notes\.txt"):
        load_imagefolder(root)
    report = load_imagefolder(root, screen=Screen(skip_bad=True)).description["skip_report"]
    assert report["skipped"] == 1 and "notes.txt" in report["reasons"]["are not readable images"]["first"][0]
    (root / "stray.png").write_bytes(b"")
    with pytest.raises(DataError, match="is a file; expected one folder per class"):
        load_imagefolder(root)
