"""The resolution augmentation (augment.resolution) on a real X-ray at model size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from trainer_support import kermany_files

from medcore.record import Preprocessing
from trainer.augment import ClassificationPresetTrain
from trainer.config import AugmentConfig

RECIPE = Preprocessing(height=64, width=64, channels=1, crop="none", interpolation="bicubic", mean=(0.48,), std=(0.23,))
ONLY_RESOLUTION = {"hflip": 0.0, "rotation": 0.0, "crop_scale": 1.0}


def xray_at_model_size() -> np.ndarray:
    path = kermany_files()["PNEUMONIA"][0]
    with Image.open(path) as image:
        small = image.convert("L").resize((64, 64), Image.Resampling.BICUBIC)
    return np.asarray(small)[:, :, None]


def test_resolution_drop_is_a_shrink_and_resize_back() -> None:
    pixels = xray_at_model_size()
    preset = ClassificationPresetTrain(
        RECIPE, AugmentConfig(**ONLY_RESOLUTION, resolution=1.0, resolution_min=28, resolution_max=28)
    )
    out = preset(pixels)
    image = Image.fromarray(pixels[:, :, 0])
    expected = image.resize((28, 28), Image.Resampling.BICUBIC).resize((64, 64), Image.Resampling.BICUBIC)
    assert out.shape == pixels.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], np.asarray(expected))
    assert np.abs(out.astype(int) - pixels.astype(int)).mean() > 1.0  # detail was lost


def test_resolution_probability_and_size_range() -> None:
    pixels = xray_at_model_size()
    never = ClassificationPresetTrain(RECIPE, AugmentConfig(**ONLY_RESOLUTION, resolution=0.0))
    np.testing.assert_array_equal(never(pixels), pixels)
    half = ClassificationPresetTrain(RECIPE, AugmentConfig(**ONLY_RESOLUTION, resolution=0.5))
    torch.manual_seed(0)
    changed = sum(not np.array_equal(half(pixels), pixels) for _ in range(200))
    assert 70 <= changed <= 130  # binomial(200, 0.5): outside this range has probability < 1e-4


def test_resolution_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"augment\.resolution "):
        AugmentConfig(resolution=1.5)
    with pytest.raises(ValueError, match=r"augment\.resolution_max"):
        AugmentConfig(resolution_min=40, resolution_max=24)
    with pytest.raises(ValueError, match=r"augment\.resolution_min"):
        AugmentConfig(resolution_min=1)
