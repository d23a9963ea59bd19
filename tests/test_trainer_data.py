"""Data sources and the Dataset on the real files: MedMNIST npz, a Kermany tree of real JPEGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_location import needs_full_data
from trainer_support import PNEUMONIAMNIST, kermany_files, make_kermany_tree

from medcore.imaging import load_model_input, preprocess_image
from medcore.record import Preprocessing, Task
from trainer.augment import ClassificationPresetTrain
from trainer.config import AugmentConfig, DataConfig, PreprocessingConfig
from trainer.data import DataError, ManifestDataset, load_data
from trainer.data.kermany import load_kermany
from trainer.recipe import resolve_recipe

RECIPE = Preprocessing(height=28, width=28, channels=1, mean=(0.57,), std=(0.17,))
NO_AUGMENT = AugmentConfig(hflip=0, rotation=0, crop_scale=1.0, brightness=0, contrast=0)


@pytest.fixture
def kermany_tree(tmp_path: Path) -> Path:
    return make_kermany_tree(tmp_path / "chest_xray", {"train": 3, "val": 2, "test": 2})


@needs_full_data
def test_medmnist_splits_labels_and_limit() -> None:
    data = load_data(DataConfig(kind="medmnist", path=str(PNEUMONIAMNIST)))
    assert data.task is Task.BINARY and data.label_names == ("pneumonia",)
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 4708, "val": 524, "test": 624}
    assert data.description["splits"]["test"]["positives"] == [390]
    assert data.description["files"] == {
        PNEUMONIAMNIST.name: "194a7199bf9cbb2dd7f140ebd73fc4c2fa71f44049d84a8b5269dbbcf648ad48"
    }
    train = data.split("train")
    assert train.images is not None and train.images.shape[1:] == (28, 28)
    assert train.labels.dtype == np.float32 and train.labels.shape == (4708, 1)
    small = load_data(DataConfig(kind="medmnist", path=str(PNEUMONIAMNIST), limit=50))
    assert all(len(split) == 50 for split in small.splits.values())
    assert small.description["limit"] == 50


def test_medmnist_eval_tensor_is_medcore_preprocess() -> None:
    split = load_data(DataConfig(kind="medmnist", path=str(PNEUMONIAMNIST), limit=8)).split("test")
    dataset = ManifestDataset(split, RECIPE)
    assert split.images is not None
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert np.array_equal(image.numpy(), preprocess_image(split.images[index], RECIPE))
        assert label.tolist() == split.labels[index].tolist()


def test_kermany_reader(kermany_tree: Path) -> None:
    data = load_kermany(kermany_tree)
    assert data.task is Task.BINARY and data.label_names == ("pneumonia",)
    train = data.split("train")
    assert len(train) == 6 and train.paths is not None
    # NORMAL = 0, PNEUMONIA = 1, in folder order
    assert train.labels[:, 0].tolist() == [0, 0, 0, 1, 1, 1]
    assert [p.parent.name for p in train.paths] == ["NORMAL"] * 3 + ["PNEUMONIA"] * 3
    assert train.patient_ids is not None
    for path, patient in zip(train.paths, train.patient_ids, strict=True):
        # Kermany's patient numbers are only unique within a split folder, so the id carries the split.
        split_name, _, file_patient = patient.partition("/")
        assert split_name == "train" and file_patient and path.stem.startswith(file_patient)


def test_kermany_eval_tensor_equals_medcore_load_model_input(kermany_tree: Path) -> None:
    """The trainer's evaluation input for a file is exactly what the service computes from its bytes."""
    split = load_kermany(kermany_tree).split("test")
    assert split.paths is not None
    for recipe in (
        RECIPE,
        Preprocessing(height=64, width=48, channels=3, crop="none", mean=(0.5,) * 3, std=(0.2,) * 3),
    ):
        dataset = ManifestDataset(split, recipe)
        for index, path in enumerate(split.paths):
            expected = load_model_input(path.read_bytes(), recipe)
            assert np.array_equal(dataset[index][0].numpy(), expected)


def test_train_path_without_augmentation_equals_eval_path(kermany_tree: Path) -> None:
    for split in (
        load_kermany(kermany_tree).split("val"),
        load_data(DataConfig(kind="medmnist", path=str(PNEUMONIAMNIST), limit=4)).split("val"),
    ):
        plain = ManifestDataset(split, RECIPE, ClassificationPresetTrain(RECIPE, NO_AUGMENT))
        evaluation = ManifestDataset(split, RECIPE)
        for index in range(len(split)):
            assert torch.equal(plain[index][0], evaluation[index][0])


def test_augmentation_keeps_shape_and_changes_pixels() -> None:
    split = load_data(DataConfig(kind="medmnist", path=str(PNEUMONIAMNIST), limit=4)).split("train")
    torch.manual_seed(0)
    augmented = ManifestDataset(split, RECIPE, ClassificationPresetTrain(RECIPE, AugmentConfig(hflip=1.0)))
    image, _ = augmented[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert not torch.equal(image, ManifestDataset(split, RECIPE)[0][0])


def test_recipe_stats_measured_on_training_files(kermany_tree: Path) -> None:
    data = load_kermany(kermany_tree)
    recipe = resolve_recipe(PreprocessingConfig(height=32, width=32), data)
    assert (recipe.height, recipe.width, recipe.channels, recipe.crop) == (32, 32, 1, "center_square")
    pixels = np.stack([ManifestDataset(data.split("train"), recipe).resized_image(i) for i in range(6)]) / 255.0
    assert recipe.mean[0] == pytest.approx(pixels.mean(), abs=1e-5)
    assert recipe.std[0] == pytest.approx(pixels.std(), abs=1e-5)
    fixed = resolve_recipe(PreprocessingConfig(mean=(0.5,), std=(0.25,)), data)
    assert (fixed.height, fixed.mean, fixed.std) == (224, (0.5,), (0.25,))


def test_kermany_missing_class_folder(kermany_tree: Path) -> None:
    for path in (kermany_tree / "val" / "PNEUMONIA").iterdir():
        path.unlink()
    (kermany_tree / "val" / "PNEUMONIA").rmdir()
    with pytest.raises(DataError, match=r"val has no PNEUMONIA folder; expected NORMAL, PNEUMONIA"):
        load_kermany(kermany_tree)


def test_kermany_missing_split_and_unexpected_folder(kermany_tree: Path) -> None:
    (kermany_tree / "train" / "COVID").mkdir()
    with pytest.raises(DataError, match=r"unexpected folder 'COVID'; allowed: NORMAL, PNEUMONIA"):
        load_kermany(kermany_tree)
    with pytest.raises(DataError, match=r"chest_xray/nowhere does not exist"):
        load_kermany(kermany_tree / "nowhere")


def test_kermany_empty_split(tmp_path: Path) -> None:
    root = make_kermany_tree(tmp_path / "chest_xray", {"train": 1, "val": 0, "test": 1})
    with pytest.raises(DataError, match=r"split 'val' at .*val holds no images"):
        load_kermany(root)


def test_kermany_unreadable_image_is_named(kermany_tree: Path) -> None:
    broken = kermany_tree / "train" / "NORMAL" / "IM-9999-0001.jpeg"
    broken.write_bytes(b"this is not a JPEG")
    with pytest.raises(DataError, match=r"1 of \d+ samples are not readable images: IM-9999-0001\.jpeg"):
        load_kermany(kermany_tree)


def test_truncated_image_fails_when_read_and_names_the_file(kermany_tree: Path) -> None:
    source = kermany_files()["NORMAL"][0]
    truncated = kermany_tree / "test" / "NORMAL" / "IM-9998-0001.jpeg"
    data = source.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # a valid header, half the scan missing
    split = load_kermany(kermany_tree).split("test")
    assert split.paths is not None
    dataset = ManifestDataset(split, RECIPE)
    with pytest.raises(DataError, match=r"cannot read image .*IM-9998-0001\.jpeg: .*truncated"):
        dataset.model_input(split.paths.index(truncated))
