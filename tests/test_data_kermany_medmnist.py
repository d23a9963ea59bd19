"""Kermany's 3-class task from its file names, and MedMNIST files with multi-label and multi-class labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_fixtures import build_kermany, covid_images, kermany_images, link
from data_location import needs_full_data

from medcore.record import Task
from trainer.data.kermany import SUBTYPES, load_kermany
from trainer.data.manifest import DataError
from trainer.data.medmnist import KNOWN_LABELS, load_medmnist

BACTERIAL = ("Streptococcus", "Klebsiella", "Bacterial", "Mycoplasma Bacterial Pneumonia", "Legionella")


def test_kermany_subtypes_from_file_names(tmp_path: Path, shared_data: Path) -> None:
    root = build_kermany(tmp_path / "chest_xray", kermany_images(shared_data))
    # The subset's Kermany pneumonias are all viral; real bacterial pneumonias from the COVID
    # collection join them under Kermany-style names (personN_bacteria_M.jpeg).
    bacterial = [im for im in covid_images(shared_data, count=112) if im.finding in BACTERIAL][:4]
    for i, image in enumerate(bacterial):
        link(image.source, root / "train" / "PNEUMONIA" / f"person{9000 + i}_bacteria_{i}.jpeg")
    binary = load_kermany(root)
    assert binary.task is Task.BINARY and binary.label_names == ("pneumonia",)
    data = load_kermany(root, subtypes=True)
    assert data.task is Task.MULTICLASS and data.label_names == SUBTYPES
    train = data.split("train")
    counts = dict(zip(SUBTYPES, train.labels.sum(axis=0).astype(int).tolist(), strict=True))
    assert counts["bacteria"] == 4 and counts["virus"] == int(binary.split("train").labels.sum()) - 4
    stats = data.description["label_stats"]
    assert stats["bacteria"]["class_weight"] > stats["normal"]["class_weight"]  # the rarer class weighs more
    link(bacterial[0].source, root / "train" / "PNEUMONIA" / "person9100_1.jpeg")  # a name without the subtype
    with pytest.raises(DataError, match=r"1 of \d+ files have no bacteria/virus subtype in the file name: .*9100_1"):
        load_kermany(root, subtypes=True)
    assert len(load_kermany(root).split("train")) == len(binary.split("train")) + 1  # binary needs no subtype


def _save(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def test_medmnist_multilabel_and_multiclass(tmp_path: Path, shared_data: Path) -> None:
    source = np.load(shared_data / "pneumoniamnist" / "pneumoniamnist_balanced_undersampled.npz")
    images = {f"{s}_images": source[f"{s}_images"][:40] for s in ("train", "val", "test")}
    pneumonia = {s: source[f"{s}_labels"][:40, 0] for s in ("train", "val", "test")}
    # ChestMNIST layout [N, 14]: the pneumonia column holds the real label; these paediatric images carry
    # no label for the other findings, which ChestMNIST's uint8 format can only write as 0.
    column = KNOWN_LABELS["chestmnist"].index("pneumonia")
    chest = {}
    for s, values in pneumonia.items():
        matrix = np.zeros((len(values), 14), dtype=np.uint8)
        matrix[:, column] = values
        chest[f"{s}_labels"] = matrix
    data = load_medmnist(_save(tmp_path / "chestmnist.npz", {**images, **chest}))
    assert data.task is Task.MULTILABEL and len(data.label_names) == 14 and data.label_names[column] == "pneumonia"
    assert data.split("test").labels[:, column].sum() == pneumonia["test"].sum()
    # Class indices [N, 1] with several names: a multi-class task, one-hot rows.
    indices = {f"{s}_labels": values[:, None] for s, values in pneumonia.items()}
    path = _save(tmp_path / "mine.npz", {**images, **indices})
    multi = load_medmnist(path, labels=("normal", "pneumonia"))
    assert multi.task is Task.MULTICLASS and multi.split("val").labels.sum(axis=1).tolist() == [1.0] * 40
    assert load_medmnist(path, labels=("pneumonia",)).task is Task.BINARY
    corrupt = {**indices, "test_labels": indices["test_labels"].copy()}
    corrupt["test_labels"][0, 0] = 7  # a class index the test writes, outside the two names
    with pytest.raises(DataError, match=r"mine_bad\.npz test_labels: class indices \[7\] lie outside 0\.\.1"):
        load_medmnist(_save(tmp_path / "mine_bad.npz", {**images, **corrupt}), labels=("normal", "pneumonia"))
    with pytest.raises(DataError, match=r"cannot tell the label names of mine\.npz"):
        load_medmnist(path)
    with pytest.raises(DataError, match="has 14 label columns but 2 label names"):
        load_medmnist(tmp_path / "chestmnist.npz", labels=("a", "b"))


@needs_full_data
def test_medmnist_leakage_check_finds_identical_images_across_splits(shared_data: Path) -> None:
    # The reconstructed PneumoniaMNIST (pinned by sha256 in its SOURCE.md) carries upstream duplicates:
    # 8 validation images are byte-identical to training images.
    data = load_medmnist(shared_data / "pneumoniamnist" / "pneumoniamnist_reconstructed_v2_splits.npz")
    leakage = data.description["leakage"]
    assert leakage["duplicates_across_splits"] == 8 and leakage["patients_in_several_splits"] == 0
    val = data.split("val").images
    train = {image.tobytes() for image in data.split("train").images}
    assert val is not None and sum(image.tobytes() in train for image in val) == 8
