"""The images a parity check runs on: a few samples of the model's own validation split, or given files.

By default the inputs come from the trainer's data layer (`data_config_from_record` -> `ManifestDataset`),
so every dataset layout and every channel stacking the model was trained with works without extra
files. Given paths may be image files (PNG, JPEG, TIFF, BMP, DICOM), folders of them, glob patterns,
or, for a stacked-channel model, one file per channel joined with "+" (`dapi.png+actin.png+tub.png`).
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcore.imaging import ImageError, load_model_input, load_stacked_input, stack_batch
from medcore.record import ModelRecord, Preprocessing

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
# Validation samples used when no images are given: spread evenly over the split.
DEFAULT_COUNT = 8
CHANNEL_JOIN = "+"


@dataclass(frozen=True)
class ParityInputs:
    """A preprocessed float32 NCHW batch, what each row is, and where the rows came from."""

    names: tuple[str, ...]
    batch: np.ndarray
    source: str
    labels: np.ndarray | None = None  # [N, L] with NaN = unknown, for samples of a labelled split

    def __len__(self) -> int:
        return len(self.names)


def parity_inputs(
    record: ModelRecord, specs: Sequence[str | Path] | None = None, *, count: int = DEFAULT_COUNT
) -> ParityInputs:
    """The given image files, or `count` samples of the validation split the record names."""
    if specs:
        paths = resolve_images(specs)
        return ParityInputs(tuple(_name(p) for p in paths), load_inputs(paths, record.preprocessing), "files")
    return split_inputs(record, "val", count)


def split_inputs(record: ModelRecord, split_name: str, count: int | None, *, seed: int | None = None) -> ParityInputs:
    """`count` samples (all when None) of one split of the record's training data, via the trainer's data layer.

    Without `seed` the samples are evenly spaced over the split; with one, a fixed random subset.
    """
    from export.evaluation import data_config_from_record
    from trainer.data import ManifestDataset, load_data

    config = data_config_from_record(record)
    split = load_data(config).split(split_name)
    if len(split) == 0:
        raise ValueError(f"the {split_name} split of {config.path} is empty; pass parity images")
    n = len(split) if count is None else min(count, len(split))
    if seed is None:
        rows = np.unique(np.linspace(0, len(split) - 1, n).round().astype(int))
    else:
        rows = np.sort(np.random.default_rng(seed).choice(len(split), size=n, replace=False))
    dataset = ManifestDataset(split, record.preprocessing)
    batch = stack_batch([dataset.model_input(int(i)) for i in rows])
    names = tuple(f"{split_name}[{int(i)}]" for i in rows)
    source = f"{config.kind} {split_name} split ({len(rows)} of {len(split)})"
    return ParityInputs(names, batch, source, split.labels[rows])


def resolve_images(specs: Sequence[str | Path]) -> list[Path | tuple[Path, ...]]:
    """Files, directories (their image files), glob patterns and "+"-joined channel sets, in order, once each."""
    found: list[Path | tuple[Path, ...]] = []
    for spec in specs:
        text = str(spec)
        if CHANNEL_JOIN in text and not Path(text).exists():
            found.append(tuple(_one_file(part) for part in text.split(CHANNEL_JOIN)))
        else:
            found.extend(_expand(text))
    return list(dict.fromkeys(found))


def load_inputs(paths: Sequence[Path | tuple[Path, ...]], recipe: Preprocessing) -> np.ndarray:
    """Decode and preprocess image files exactly as the service does -> float32 NCHW batch."""
    inputs = []
    for entry in paths:
        files = entry if isinstance(entry, tuple) else (entry,)
        try:
            contents = [path.read_bytes() for path in files]
            stacked = len(contents) > 1
            inputs.append(load_stacked_input(contents, recipe) if stacked else load_model_input(contents[0], recipe))
        except ImageError as exc:
            raise ImageError(f"parity image {_name(entry)}: {exc}") from exc
    return stack_batch(inputs)


def _name(entry: Path | tuple[Path, ...]) -> str:
    return CHANNEL_JOIN.join(p.name for p in entry) if isinstance(entry, tuple) else entry.name


def _one_file(spec: str) -> Path:
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"parity image {spec} does not exist")
    return path


def _expand(spec: str) -> Iterable[Path]:
    path = Path(spec)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"directory {spec} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return images
    if path.is_file():
        return [path]
    if glob.has_magic(spec):
        matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not matches:
            raise FileNotFoundError(f"pattern {spec!r} matches no files")
        return matches
    raise FileNotFoundError(f"parity image {spec} does not exist")
