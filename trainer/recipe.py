"""Resolve the preprocessing recipe that goes into the model record, once, from config and data."""

from __future__ import annotations

import numpy as np

from medcore.record import Interpolation, Preprocessing
from trainer.config import PreprocessingConfig
from trainer.data import ManifestDataset
from trainer.data.manifest import LabeledData, LabeledSplit

# Model input side for file-based sources when the config does not set one.
DEFAULT_FILE_SIZE = 224


def resolve_recipe(config: PreprocessingConfig, data: LabeledData) -> Preprocessing:
    """Geometry from config (else the arrays' native size, or 224 for files); mean/std from
    config, else measured on the training split after resizing."""
    train = data.split("train")
    height, width, channels = _native_geometry(train)
    geometry = Preprocessing(
        height=config.height or height,
        width=config.width or width,
        channels=config.channels or channels,  # type: ignore[arg-type]
        crop=config.crop,  # type: ignore[arg-type]
        interpolation=Interpolation(config.interpolation),
        mean=(0.0,) * (config.channels or channels),
        std=(1.0,) * (config.channels or channels),
    )
    if config.mean is not None and config.std is not None:
        mean, std = config.mean, config.std
    else:
        mean, std = pixel_stats(train, geometry, config.stats_samples)
    return Preprocessing.model_validate({**geometry.model_dump(), "mean": mean, "std": std})


def pixel_stats(
    split: LabeledSplit, geometry: Preprocessing, samples: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels/255 after medcore's resize, over up to `samples` evenly spaced images."""
    dataset = ManifestDataset(split, geometry)
    indices = np.unique(np.linspace(0, len(split) - 1, num=min(samples, len(split))).round().astype(int))
    total = np.zeros(geometry.channels)
    squares = np.zeros(geometry.channels)
    count = 0
    for index in indices:
        pixels = np.asarray(dataset.resized_image(int(index)), dtype=np.float64).reshape(-1, geometry.channels) / 255.0
        total += pixels.sum(axis=0)
        squares += (pixels**2).sum(axis=0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


def _native_geometry(split: LabeledSplit) -> tuple[int, int, int]:
    if split.images is not None:
        channels = 1 if split.images.ndim == 3 else int(split.images.shape[3])
        return int(split.images.shape[1]), int(split.images.shape[2]), channels
    return DEFAULT_FILE_SIZE, DEFAULT_FILE_SIZE, 1
