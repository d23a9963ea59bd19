"""MIMIC-CXR-JPG and CheXpert readers on fixtures in their own layouts, built from real images and labels."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import build_chexpert, build_mimic, covid_images, kermany_images

from trainer.data.chexpert import load_chexpert
from trainer.data.manifest import DataError
from trainer.data.mimic import load_mimic
from trainer.data.uncertainty import CHEXPERT_LABELS, parse_uncertainty
from trainer.data.validation import Screen

PNEUMONIA = CHEXPERT_LABELS.index("Pneumonia")
NO_FINDING = CHEXPERT_LABELS.index("No Finding")


@pytest.fixture
def images(shared_data: Path) -> list:
    return kermany_images(shared_data) + covid_images(shared_data)


def _all_labels(data) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.concatenate([s.labels for s in data.splits.values()])


def test_mimic_official_split_labels_and_patients(tmp_path: Path, images: list) -> None:
    root = build_mimic(tmp_path / "mimic", images)
    data = load_mimic(root)
    assert data.label_names == CHEXPERT_LABELS and data.task.value == "multilabel"
    assert sum(len(s) for s in data.splits.values()) == len(images)
    # Kermany's own test/val images stay in test/val (MIMIC's "validate" becomes val).
    test_names = {p.name for p in data.split("test").paths or ()}
    kermany_test = sum(1 for im in images if im.split == "test")
    assert len(test_names) >= kermany_test
    labels = _all_labels(data)
    assert labels[:, PNEUMONIA].tolist().count(1.0) == sum(im.pneumonia for im in images)
    assert labels[:, NO_FINDING].tolist().count(1.0) == sum(not im.pneumonia for im in images)
    # Blank cells are "not mentioned": unknown (NaN) by default, 0 with blank="zeros".
    assert np.isnan(labels[:, CHEXPERT_LABELS.index("Edema")]).all()
    zeros = _all_labels(load_mimic(root, blank="zeros"))
    assert not np.isnan(zeros).any() and zeros[:, CHEXPERT_LABELS.index("Edema")].sum() == 0
    assert data.description["leakage"]["patients_in_several_splits"] == 0
    path = data.split("train").paths[0]  # type: ignore[index]
    assert path.relative_to(root).parts[:2] == ("files", path.parent.parent.name[:3])


def test_mimic_uncertainty_policy_per_label(tmp_path: Path, images: list) -> None:
    root = build_mimic(tmp_path / "mimic", images, uncertain_first=True)  # one Pneumonia cell is -1 (set by the test)
    counts = {}
    for policy in ("ignore", "zeros", "ones"):
        # blank="zeros" so that the only unknown left can be the uncertain cell.
        column = _all_labels(load_mimic(root, uncertainty=f"zeros,Pneumonia={policy}", blank="zeros"))[:, PNEUMONIA]
        counts[policy] = (int(np.nansum(column)), int(np.isnan(column).sum()))
    positives = sum(im.pneumonia for im in images)
    assert counts == {"ignore": (positives - 1, 1), "zeros": (positives - 1, 0), "ones": (positives, 0)}
    assert parse_uncertainty("ones,Edema=zeros", CHEXPERT_LABELS)["Edema"] == "zeros"
    with pytest.raises(DataError, match="unknown label 'Edemaa'"):
        parse_uncertainty("Edemaa=ones", CHEXPERT_LABELS)
    with pytest.raises(ValueError, match="Invalid uncertainty policy 'maybe'"):
        parse_uncertainty("maybe", CHEXPERT_LABELS)


def test_mimic_view_filter_and_negbio(tmp_path: Path, images: list) -> None:
    root = build_mimic(tmp_path / "mimic", images)
    frontal_pa = load_mimic(root, views=["PA"], labeler="negbio", screen=Screen(skip_bad=True))
    kept = sum(len(s) for s in frontal_pa.splits.values())
    assert kept == sum(im.view == "PA" for im in images)
    assert frontal_pa.description["excluded"]["view"] == len(images) - kept
    assert "mimic-cxr-2.0.0-negbio.csv.gz" in frontal_pa.description["files"]
    (root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(DataError, match="MIMIC metadata file"):
        load_mimic(root, views=["PA"])


def test_mimic_bad_data(tmp_path: Path, images: list) -> None:
    root = build_mimic(tmp_path / "mimic", images)
    jpgs = sorted((root / "files").rglob("*.jpg"))
    jpgs[0].unlink()
    with pytest.raises(DataError, match=rf"1 of {len(images)} rows name files that do not exist: .*{jpgs[0].name}"):
        load_mimic(root)
    data = load_mimic(root, screen=Screen(skip_bad=True))
    assert data.description["skip_report"]["skipped"] == 1
    labels = root / "mimic-cxr-2.0.0-chexpert.csv.gz"
    text = gzip.decompress(labels.read_bytes()).decode()
    labels.write_bytes(gzip.compress(text.replace(",1.0,", ",2.0,", 1).encode()))  # an invalid value set by the test
    with pytest.raises(DataError, match=r"hold a label other than 1, 0, -1 or blank: s\d+ \(.*'2\.0'\)"):
        load_mimic(root, screen=Screen(skip_bad=False))
    header, *rest = text.splitlines()
    labels.write_bytes(gzip.compress("\n".join([header.replace("Edema", "Oedema"), *rest]).encode()))
    with pytest.raises(DataError, match=r"lacks column 'Edema'"):
        load_mimic(root)


def test_chexpert_csvs(tmp_path: Path, images: list) -> None:
    root = build_chexpert(tmp_path / "CheXpert-v1.0-small", images)
    data = load_chexpert(root, labels=["Pneumonia", "No Finding"])
    assert data.label_names == ("Pneumonia", "No Finding")
    valid_rows = len((root / "valid.csv").read_text().splitlines()) - 1
    assert len(data.split("val")) == valid_rows
    assert len(data.split("train")) + len(data.split("test")) == len(images) - valid_rows
    assert data.description["official_split"] == "train and val"
    assert data.description["leakage"]["patients_in_several_splits"] == 0
    labels = _all_labels(data)
    assert np.nansum(labels[:, 0]) == sum(im.pneumonia for im in images)
    assert np.isnan(labels[:, 0]).sum() == sum(not im.pneumonia for im in images)  # blank: not mentioned
    assert all(p.is_file() for s in data.splits.values() for p in s.paths or ())
    with pytest.raises(DataError, match="not a CheXpert label"):
        load_chexpert(root, labels=["Pneumonia", "COVID-19"])
    (root / "valid.csv").unlink()
    with pytest.raises(DataError, match=r"valid\.csv does not exist"):
        load_chexpert(root)
