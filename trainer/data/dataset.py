"""The Dataset over any LabeledSplit: evaluation through medcore alone, training with augmentation.

Torch-free at import (a map-style dataset needs no base class); only `__getitem__` makes tensors,
for a DataLoader, which has already imported torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from medcore.imaging import ImageError, load_model_input, load_stacked_input, preprocess_image
from medcore.imaging.preprocess import normalize
from medcore.record import Preprocessing
from trainer.data.cache import CachedSplit, resized_pixels
from trainer.data.manifest import DataError, LabeledSplit

if TYPE_CHECKING:
    import torch

# A training augmentation: uint8 [H, W, C] pixels at model size in, same shape out (trainer.augment).
Augment = Callable[[np.ndarray], np.ndarray]


class ManifestDataset:
    """Yields (float32 CHW input, float32 [L] labels with NaN for unknown).

    Without `augment` every input comes from medcore's `load_model_input` (files),
    `load_stacked_input` (channel files) or `preprocess_image` (arrays): the very code the
    service runs. With `augment`, the image is decoded and resized by medcore, augmented as
    8-bit pixels, then normalised by medcore. With `cache`, the decoded and resized pixels come
    from the uint8 cache instead (identical to medcore's, so evaluation is unchanged).
    """

    def __init__(
        self,
        split: LabeledSplit,
        recipe: Preprocessing,
        augment: Augment | None = None,
        cache: CachedSplit | None = None,
    ) -> None:
        self.split = cache.split if cache is not None else split
        self.recipe = recipe
        self.augment = augment
        self.cache = cache

    def __len__(self) -> int:
        return len(self.split)

    def model_input(self, index: int) -> np.ndarray:
        """The evaluation input for sample `index`, exactly as the service would compute it."""
        if self.cache is not None:
            return normalize(self.cache.pixels(index), self.recipe)
        if self.split.images is not None:
            return preprocess_image(self.split.images[index], self.recipe)
        files = self.split.files()
        assert files is not None
        try:
            contents = [path.read_bytes() for path in files[index]]
            if self.split.channel_paths is not None:
                return load_stacked_input(contents, self.recipe)
            return load_model_input(contents[0], self.recipe)
        except (ImageError, OSError) as exc:
            raise DataError(f"cannot read image {'+'.join(map(str, files[index]))}: {exc}") from None

    def resized_pixels(self, index: int) -> np.ndarray:
        """Sample `index` decoded, cropped and resized by medcore: uint8 [H, W, C], before augmentation."""
        if self.cache is not None:
            return self.cache.pixels(index)
        return resized_pixels(self.split, index, self.recipe)

    def resized_image(self, index: int) -> Image.Image:
        """`resized_pixels` as a Pillow image (grayscale and RGB recipes only)."""
        pixels = self.resized_pixels(index)
        return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(float32 CHW input, float32 [L] labels) as numpy arrays."""
        if self.augment is None:
            pixels = self.model_input(index)
        else:
            pixels = normalize(self.augment(self.resized_pixels(index)), self.recipe)
        return pixels, self.split.labels[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch  # only ever called by a DataLoader or a test, where torch is loaded anyway

        pixels, labels = self.sample(index)
        return torch.from_numpy(pixels), torch.from_numpy(labels)
