"""The decoded uint8 cache: built once from real JPEGs, identical to medcore's eval pixels, keyed and atomic."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import build_kermany, kermany_images

from medcore.imaging import load_model_input
from medcore.imaging.preprocess import normalize
from medcore.record import Preprocessing
from trainer.data.cache import cache_key, load_cache
from trainer.data.imagefolder import load_imagefolder
from trainer.data.manifest import DataError, LabeledSplit
from trainer.data.medmnist import load_medmnist
from trainer.data.validation import Screen

GRAY = Preprocessing(height=32, width=32, channels=1, mean=(0.5,), std=(0.25,))
RGB = Preprocessing(height=24, width=40, channels=3, crop="none", mean=(0.5,) * 3, std=(0.2,) * 3)


@pytest.fixture
def split(tmp_path: Path, shared_data: Path) -> LabeledSplit:
    return load_imagefolder(build_kermany(tmp_path / "chest_xray", kermany_images(shared_data, per_class=4))).split(
        "train"
    )


@pytest.mark.parametrize("recipe", [GRAY, RGB])
def test_cached_pixels_are_the_eval_pixels(tmp_path: Path, split: LabeledSplit, recipe: Preprocessing) -> None:
    cached = load_cache(split, recipe, tmp_path / "cache")
    assert cached.info["shape"] == [len(split), recipe.height, recipe.width, recipe.channels]
    for index, path in enumerate(split.paths or ()):
        expected = load_model_input(path.read_bytes(), recipe)  # what evaluation and the service compute
        np.testing.assert_array_equal(normalize(cached.pixels(index), recipe), expected)


def test_second_open_reuses_the_file_and_changes_rebuild(tmp_path: Path, split: LabeledSplit) -> None:
    first = load_cache(split, GRAY, tmp_path)
    stamp = first.path.stat().st_mtime_ns
    again = load_cache(split, GRAY, tmp_path)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp
    assert json.loads(first.path.with_suffix(".json").read_text())["key"] == cache_key(split, GRAY)
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file is left behind"
    other = load_cache(split, GRAY.model_copy(update={"height": 16, "width": 16}), tmp_path)
    assert other.path != first.path
    assert cache_key(split, GRAY) == cache_key(split, GRAY.model_copy(update={"mean": (0.1,)}))  # stats are not pixels
    copy = tmp_path / "copy.jpeg"
    copy.write_bytes((split.paths or ())[0].read_bytes())
    edited = LabeledSplit("train", split.labels[:1], paths=(copy,))
    before = cache_key(edited, GRAY)
    os.utime(copy, ns=(1_000_000_000, 1_000_000_000))  # the file changed on disk: a new key, a new cache
    assert cache_key(edited, GRAY) != before


def test_memory_arrays_are_cached_too(tmp_path: Path, shared_data: Path) -> None:
    data = load_medmnist(shared_data / "pneumoniamnist" / "pneumoniamnist_balanced_undersampled.npz")
    split = data.split("val").subset(np.arange(20))
    cached = load_cache(split, GRAY, tmp_path)
    assert cached.pixels(3).shape == (32, 32, 1)


def test_undecodable_image_fails_with_names_or_is_skipped(tmp_path: Path, split: LabeledSplit) -> None:
    victim = tmp_path / "truncated.jpeg"
    victim.write_bytes((split.paths or ())[0].read_bytes()[:2000])  # a real JPEG cut short: header fine, pixels not
    broken = LabeledSplit("train", split.labels, paths=(victim, *(split.paths or ())[1:]))
    with pytest.raises(DataError, match=r"1 of \d+ images could not be decoded: .*truncated\.jpeg"):
        load_cache(broken, GRAY, tmp_path / "cache")
    screen = Screen(skip_bad=True)
    cached = load_cache(broken, GRAY, tmp_path / "cache", screen=screen)
    assert len(cached) == len(split) - 1 and cached.rows[0] == 1
    assert screen.report()["skipped"] == 1
