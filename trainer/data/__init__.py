"""Data sources -> LabeledData (per split: images or files, float32 label matrix with NaN = unknown).

Every source returns the same `LabeledData`; `ManifestDataset` turns any split into tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from trainer.config import DATA_KINDS, DataConfig
from trainer.data.dataset import ManifestDataset
from trainer.data.kermany import load_kermany
from trainer.data.manifest import SPLITS, DataError, LabeledData, LabeledSplit
from trainer.data.medmnist import load_medmnist

_LOADERS: dict[str, Callable[[DataConfig], LabeledData]] = {
    "medmnist": lambda config: load_medmnist(Path(config.path), config.labels),
    "kermany": lambda config: load_kermany(Path(config.path)),
}
assert tuple(_LOADERS) == DATA_KINDS, "every data kind in the config needs a loader"


def load_data(config: DataConfig) -> LabeledData:
    """Read the dataset `config` names, cut each split to `config.limit` samples if set."""
    if config.kind not in _LOADERS:
        raise ValueError(f"Invalid data kind {config.kind!r}. Only {', '.join(_LOADERS)} are supported.")
    if not config.path:
        raise DataError(f"data.path is empty; set it to the {config.kind} dataset location")
    data = _LOADERS[config.kind](config)
    if config.limit is not None:
        data = replace(data, splits={name: _limit(split, config.limit) for name, split in data.splits.items()})
    description = {
        **data.description,
        "limit": config.limit,
        "labels": list(data.label_names),
        "splits": {name: split.summary() for name, split in data.splits.items()},
    }
    return replace(data, description=description)


def _limit(split: LabeledSplit, limit: int) -> LabeledSplit:
    """A fixed random subset (same for every seed, so quick runs are comparable), kept in file order."""
    if len(split) <= limit:
        return split
    rng = np.random.default_rng(0)
    return split.subset(np.sort(rng.choice(len(split), size=limit, replace=False)))


__all__ = ["SPLITS", "DataError", "LabeledData", "LabeledSplit", "ManifestDataset", "load_data"]
