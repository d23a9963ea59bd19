"""Decode and resize every image once into a uint8 memory-mapped array, so later epochs never decode a JPEG.

The cache holds medcore's geometric preprocessing (decode, convert, crop, resize: the exact
pixels evaluation and the service see, before normalisation) as `[N, H, W, C]` uint8 in a `.npy`
file, keyed by a hash of the listing (paths, sizes, modification times, or the array bytes) and
the recipe's geometry. It is written under a temporary name and renamed into place, beside a
small JSON sidecar, so a crash never leaves a half-written cache that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medcore.atomic import atomic_write
from medcore.imaging import ImageError, decode_channels, decode_image
from medcore.imaging.preprocess import image_mode, is_single_image, resize_channels, resize_image
from medcore.record import Preprocessing
from trainer.data.manifest import DataError, LabeledSplit
from trainer.data.validation import Screen

CACHE_FORMAT = 1
DEFAULT_CACHE_DIR = Path(os.environ.get("MEDIMAGING_CACHE", Path.home() / ".cache" / "medimaging"))
GEOMETRY = ("height", "width", "channels", "crop", "interpolation")


def resized_pixels(split: LabeledSplit, index: int, recipe: Preprocessing) -> np.ndarray:
    """Sample `index` decoded, converted, cropped and resized by medcore: uint8 [H, W, C].

    These are the pixels evaluation sees before normalisation (medcore's `load_model_input`
    is `normalize` of exactly this), and what augmentation starts from.
    """
    if split.images is not None:
        array = split.images[index]
        if not is_single_image(recipe):
            return resize_channels(array, recipe)
        image = Image.fromarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array)
        return _hwc(resize_image(image, recipe))
    files = split.files()
    assert files is not None
    min_side = max(recipe.height, recipe.width)
    try:
        contents = [path.read_bytes() for path in files[index]]
        if split.channel_paths is not None:
            return resize_channels(decode_channels(contents, recipe.channels, min_side=min_side), recipe)
        decoded = decode_image(contents[0], mode=image_mode(recipe), min_side=min_side)
    except (ImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {'+'.join(map(str, files[index]))}: {exc}") from None
    return _hwc(resize_image(decoded, recipe))


def _hwc(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def cache_key(split: LabeledSplit, recipe: Preprocessing) -> str:
    """sha256 of the cache format, the recipe's geometry and every sample's identity."""
    digest = hashlib.sha256(f"format={CACHE_FORMAT}\n".encode())
    digest.update(json.dumps({k: str(getattr(recipe, k)) for k in GEOMETRY}, sort_keys=True).encode())
    if split.images is not None:
        digest.update(f"array {split.images.shape} {split.images.dtype}\n".encode())
        digest.update(np.ascontiguousarray(split.images).data)
        return digest.hexdigest()
    for paths in split.files() or ():
        for path in paths:
            try:
                stat = path.stat()
            except OSError as exc:
                raise DataError(f"cannot read image {path}: {exc}") from None
            digest.update(f"{path.resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}\t".encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass
class CachedSplit:
    """A split whose pixels come from the cache. `rows` maps each sample of `split` to a row of the file."""

    split: LabeledSplit
    path: Path
    rows: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    _pixels: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.split)

    def pixels(self, index: int) -> np.ndarray:
        """uint8 [H, W, C] of sample `index` (opened lazily, so each loader worker maps the file itself)."""
        if self._pixels is None:
            self._pixels = np.load(self.path, mmap_mode="r")
        return np.asarray(self._pixels[int(self.rows[index])])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pixels": None}  # never pickle the mapping into a worker


def load_cache(
    split: LabeledSplit,
    recipe: Preprocessing,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    *,
    screen: Screen | None = None,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> CachedSplit:
    """Open the cache for `split` and the recipe's geometry, building it first if it does not exist.

    Images that fail to decode are an error with counts and the first offenders; with
    `screen.skip_bad` they are reported and left out of the returned split.
    """
    screen = screen or Screen()
    key = cache_key(split, recipe)
    stem = cache_dir / f"{split.name}-{key[:32]}"
    data_path, info_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if not (data_path.is_file() and info_path.is_file()):
        _build(split, recipe, data_path, info_path, key, workers, log)
    info = json.loads(info_path.read_text())
    failed = {int(i): message for i, message in info["failed"].items()}
    screen.reject("could not be decoded", list(failed.values()), len(split), unit="images")
    rows = np.asarray([i for i in range(len(split)) if i not in failed], dtype=np.int64)
    kept = split if not failed else split.subset(rows)
    return CachedSplit(split=kept, path=data_path, rows=rows, info=info)


def _build(
    split: LabeledSplit,
    recipe: Preprocessing,
    data_path: Path,
    info_path: Path,
    key: str,
    workers: int | None,
    log: Callable[[str], None] | None,
) -> None:
    data_path.parent.mkdir(parents=True, exist_ok=True)
    shape = (len(split), recipe.height, recipe.width, recipe.channels)
    tmp = data_path.with_name(f".{data_path.stem}.{os.getpid()}.tmp.npy")  # a memmap needs a path, not a handle
    if log:
        log(f"caching {len(split)} {split.name} images at {recipe.height}x{recipe.width} into {data_path}")
    try:
        failed = _fill(split, recipe, tmp, shape, workers)
        os.replace(tmp, data_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    info = {
        "format": CACHE_FORMAT,
        "key": key,
        "split": split.name,
        "shape": list(shape),
        "dtype": "uint8",
        "recipe": {k: str(getattr(recipe, k)) for k in GEOMETRY},
        "failed": {str(i): failed[i] for i in sorted(failed)},
    }
    atomic_write(info_path, lambda handle: handle.write(json.dumps(info, indent=1).encode()))


def _fill(
    split: LabeledSplit, recipe: Preprocessing, tmp: Path, shape: tuple[int, ...], workers: int | None
) -> dict[int, str]:
    """Decode every sample into a new `.npy` at `tmp`; returns the samples that failed, with the reason."""
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    failed: dict[int, str] = {}

    def fill(index: int) -> None:
        try:
            array[index] = resized_pixels(split, index, recipe)
        except DataError as exc:
            failed[index] = str(exc).removeprefix("cannot read image ")

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        list(pool.map(fill, range(len(split))))  # Pillow releases the GIL while decoding and resizing
    array.flush()
    return failed
