"""Multi-channel microscopy: per-sample folders, multi-page TIFFs and a CSV with a path column per channel.

There is no microscopy in ../shared/data: every channel is a crop of a real radiograph (see
data_fixtures.microscopy_stacks), so the pixels and the class membership are real.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import CHANNELS, build_microscopy, microscopy_stacks
from PIL import Image

from medcore.imaging import ImageDecodeError, decode_channels, load_model_input, load_stacked_input
from medcore.record import Preprocessing, Task
from trainer.augment import ClassificationPresetTrain
from trainer.config import AugmentConfig, DataConfig, PreprocessingConfig
from trainer.data import ManifestDataset, load_data, make_dataset
from trainer.data.manifest import DataError
from trainer.data.microscopy import load_microscopy
from trainer.data.samples import SplitPlan
from trainer.data.validation import Screen
from trainer.recipe import resolve_recipe

PLAN = SplitPlan(val_fraction=0.25, test_fraction=0.25, seed=0)
RECIPE = Preprocessing(height=32, width=32, channels=3, channel_names=CHANNELS, mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.fixture(scope="module")
def stacks(shared_data: Path) -> dict[str, list[list[Image.Image]]]:
    return microscopy_stacks(shared_data)


@pytest.mark.parametrize("layout", ["folders", "tiff", "csv"])
def test_three_layouts_read_the_same_samples(
    tmp_path: Path, stacks: dict[str, list[list[Image.Image]]], layout: str
) -> None:
    root = build_microscopy(tmp_path / layout, stacks, layout)
    channels = () if layout == "tiff" else CHANNELS
    data = load_microscopy(root, channels=channels, plan=PLAN)
    assert data.task is Task.MULTICLASS and data.label_names == ("covid", "normal", "viral")
    assert sum(len(s) for s in data.splits.values()) == 12
    split = data.split("train")
    assert split.channel_paths is not None and split.paths is None
    assert all(len(files) == (1 if layout == "tiff" else 3) for files in split.channel_paths)
    assert data.description["leakage"]["patients_in_several_splits"] == 0
    first = ManifestDataset(split, RECIPE).model_input(0)
    assert first.shape == (3, 32, 32)
    assert not np.allclose(first[0], first[1])  # each channel is its own image, not one image converted to RGB
    if layout != "csv":
        assert split.channel_paths[0][0].relative_to(root).parts[0] in data.label_names  # class = folder


def test_stacked_input_equals_the_tiff_pages_and_the_channel_files(stacks: dict[str, list[list[Image.Image]]]) -> None:
    planes = [image.copy() for image in stacks["normal"][0]]
    files = [_png(p) for p in planes]
    buffer = io.BytesIO()
    planes[0].save(buffer, format="TIFF", save_all=True, append_images=planes[1:])
    from_files = load_stacked_input(files, RECIPE)
    from_tiff = load_model_input(buffer.getvalue(), RECIPE)  # what the service does with one upload
    np.testing.assert_array_equal(from_files, from_tiff)
    stacked = decode_channels(files, 3)
    assert stacked.shape == (96, 96, 3)
    np.testing.assert_array_equal(stacked[:, :, 1], np.asarray(planes[1]))
    with pytest.raises(ImageDecodeError, match="expected 4 channels, got 3"):
        decode_channels(files, 4)
    with pytest.raises(ImageDecodeError, match="channels differ in size"):
        decode_channels([*files[:2], _png(planes[2].crop((0, 0, 50, 50)))], 3)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.copy().save(buffer, format="PNG")  # a copy: Pillow keeps a saved image's encoder settings
    return buffer.getvalue()


def test_recipe_cache_and_augmentation_keep_the_channels(
    tmp_path: Path, stacks: dict[str, list[list[Image.Image]]]
) -> None:
    root = build_microscopy(tmp_path / "m", stacks, "folders")
    config = DataConfig(kind="microscopy", path=str(root), channels=CHANNELS, val_fraction=0.25, test_fraction=0.25,
                        cache=True, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    data = load_data(config)
    recipe = resolve_recipe(PreprocessingConfig(height=32, width=32), data)
    assert recipe.channels == 3 and recipe.channel_names == CHANNELS and len(recipe.mean) == 3
    plain = ManifestDataset(data.split("test"), recipe)
    cached = make_dataset(data.split("test"), recipe, config)
    assert cached.cache is not None
    for index in range(len(plain)):
        np.testing.assert_array_equal(cached.model_input(index), plain.model_input(index))
    augment = ClassificationPresetTrain(recipe, AugmentConfig(hflip=1.0, rotation=0, crop_scale=1.0))
    image, label = make_dataset(data.split("train"), recipe, config, augment)[0]
    assert image.shape == (3, 32, 32) and label.shape == (3,) and torch.isfinite(image).all()
    original = ManifestDataset(data.split("train"), recipe).model_input(0)
    np.testing.assert_allclose(image.numpy(), original[:, :, ::-1], atol=1e-6)  # every channel flipped together


def test_bad_microscopy_samples(tmp_path: Path, stacks: dict[str, list[list[Image.Image]]]) -> None:
    root = build_microscopy(tmp_path / "m", stacks, "folders")
    next((root / "viral" / "viral-01").glob("*_er.png")).unlink()
    message = r"1 of 12 samples lack exactly one file per channel: .*viral-01 \(0 files for channel 'er'\)"
    with pytest.raises(DataError, match=message):
        load_microscopy(root, channels=CHANNELS, plan=PLAN)
    screen = Screen(skip_bad=True)
    data = load_microscopy(root, channels=CHANNELS, plan=PLAN, screen=screen)
    assert sum(len(s) for s in data.splits.values()) == 11 and screen.report()["skipped"] == 1
    with pytest.raises(DataError, match="need the channel names"):
        load_microscopy(root)
    tiffs = build_microscopy(tmp_path / "t", stacks, "tiff")
    odd = tiffs / "covid" / "covid-00.tif"
    pages = [image.copy() for image in stacks["covid"][0][:2]]
    pages[0].save(odd, format="TIFF", save_all=True, append_images=pages[1:])
    message = r"1 of 12 samples have another number of pages .*covid-00\.tif \(2 pages, most have 3\)"
    with pytest.raises(DataError, match=message):
        load_microscopy(tiffs, plan=PLAN)
    manifest = build_microscopy(tmp_path / "c", stacks, "csv")
    with pytest.raises(DataError, match="lacks column 'dapi'"):
        load_microscopy(manifest, channels=("dapi", "microtubules", "er"), plan=PLAN)
