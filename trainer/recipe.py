"""Resolve the preprocessing recipe that goes into the model record, once, from config and data."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from medcore.record import Interpolation, Preprocessing
from trainer.config import PreprocessingConfig
from trainer.data import ManifestDataset
from trainer.data.manifest import LabeledData, LabeledSplit

DatasetFactory = Callable[[LabeledSplit, Preprocessing], ManifestDataset]
# Model input side for file-based sources when the config does not set one.
DEFAULT_FILE_SIZE = 224


def resolve_recipe(
    config: PreprocessingConfig, data: LabeledData, make_dataset: DatasetFactory = ManifestDataset
) -> Preprocessing:
    """Geometry from config (else the arrays' native size, or 224 for files); mean/std from
    config, else measured on the training split after resizing (through `make_dataset`, so a
    decoded cache built here serves training too: its key ignores mean and std)."""
    train = data.split("train")
    height, width, channels = _native_geometry(train)
    stacked = train.channel_paths is not None
    if stacked and config.channels not in (None, channels):
        raise ValueError(f"preprocessing.channels is {config.channels}, but each sample stacks {channels} channels")
    channels = config.channels or channels
    geometry = Preprocessing(
        height=config.height or height,
        width=config.width or width,
        channels=channels,
        channel_names=_channel_names(data, channels) if stacked else None,
        crop=config.crop,  # type: ignore[arg-type]
        interpolation=Interpolation(config.interpolation),
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
    )
    if config.mean is not None and config.std is not None:
        mean, std = config.mean, config.std
    else:
        mean, std = pixel_stats(make_dataset(train, geometry), config.stats_samples)
    return Preprocessing.model_validate({**geometry.model_dump(), "mean": mean, "std": std})


def pixel_stats(dataset: ManifestDataset, samples: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels/255 after medcore's resize, over up to `samples` evenly spaced images."""
    geometry = dataset.recipe
    indices = np.unique(np.linspace(0, len(dataset) - 1, num=min(samples, len(dataset))).round().astype(int))
    total = np.zeros(geometry.channels)
    squares = np.zeros(geometry.channels)
    count = 0
    for index in indices:
        pixels = np.asarray(dataset.resized_pixels(int(index)), dtype=np.float64).reshape(-1, geometry.channels) / 255.0
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
    if split.channel_paths is not None:
        first = split.channel_paths[0]
        if len(first) > 1:
            return DEFAULT_FILE_SIZE, DEFAULT_FILE_SIZE, len(first)
        with Image.open(first[0]) as image:  # one multi-page TIFF: a page per channel
            return DEFAULT_FILE_SIZE, DEFAULT_FILE_SIZE, int(getattr(image, "n_frames", 1))
    return DEFAULT_FILE_SIZE, DEFAULT_FILE_SIZE, 1


def _channel_names(data: LabeledData, count: int) -> tuple[str, ...]:
    """The reader's channel names (microscopy), or channel_1..N for the pages of multi-page TIFFs."""
    names = data.description.get("channels")
    if isinstance(names, list) and len(names) == count:
        return tuple(str(n) for n in names)
    return tuple(f"channel_{i + 1}" for i in range(count))
