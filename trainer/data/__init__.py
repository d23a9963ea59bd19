"""Data sources -> LabeledData (per split: images or files, float32 label matrix with NaN = unknown).

Every source returns the same `LabeledData`; `ManifestDataset` turns any split into tensors,
from the files or from the decoded uint8 cache (`make_dataset`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from medcore.record import Preprocessing
from trainer.config import DATA_KINDS, DataConfig
from trainer.data.cache import DEFAULT_CACHE_DIR, load_cache
from trainer.data.dataset import Augment, ManifestDataset
from trainer.data.manifest import SPLITS, DataError, LabeledData, LabeledSplit
from trainer.data.sources import READERS
from trainer.data.validation import Screen

assert tuple(READERS) == DATA_KINDS, "every data kind in the config needs a reader"
logger = logging.getLogger("trainer")


def load_data(config: DataConfig, *, describe: bool = False) -> LabeledData:
    """Read the dataset `config` names, cut each split to `config.limit` samples if set.

    `describe` only checks that files exist (no image is opened) and collects every bad row
    into the skip report instead of stopping at the first kind of problem.
    """
    if config.kind not in READERS:
        raise ValueError(f"Invalid data kind {config.kind!r}. Only {', '.join(READERS)} are supported.")
    if not config.path:
        raise DataError(f"data.path is empty; set it to the {config.kind} dataset location")
    screen = Screen(skip_bad=config.skip_bad or describe, verify_images=not describe)
    data = READERS[config.kind](config, screen)
    if config.limit is not None:
        data = replace(data, splits={name: _limit(split, config.limit) for name, split in data.splits.items()})
    skipped = data.description.get("skip_report", {}).get("skipped", 0)
    if skipped and not describe:
        logger.warning("skipped %d bad samples (data.skip_bad); the run's data_report.json lists them", skipped)
    description = {
        **data.description,
        "limit": config.limit,
        "labels": list(data.label_names),
        "splits": {name: split.summary() for name, split in data.splits.items()},
    }
    return replace(data, description=description)


def make_dataset(
    split: LabeledSplit, recipe: Preprocessing, config: DataConfig, augment: Augment | None = None
) -> ManifestDataset:
    """The Dataset for `split`; with `config.cache`, its pixels come from the uint8 cache (built on first use)."""
    if not config.cache:
        return ManifestDataset(split, recipe, augment)
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else DEFAULT_CACHE_DIR
    cached = load_cache(split, recipe, cache_dir, screen=Screen(skip_bad=config.skip_bad), log=logger.info)
    return ManifestDataset(split, recipe, augment, cache=cached)


def _limit(split: LabeledSplit, limit: int) -> LabeledSplit:
    """A fixed random subset (same for every seed, so quick runs are comparable), kept in file order."""
    if len(split) <= limit:
        return split
    rng = np.random.default_rng(0)
    return split.subset(np.sort(rng.choice(len(split), size=limit, replace=False)))


__all__ = ["SPLITS", "DataError", "LabeledData", "LabeledSplit", "ManifestDataset", "load_data", "make_dataset"]
