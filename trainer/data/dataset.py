"""The torch Dataset over any LabeledSplit: evaluation through medcore alone, training with augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from medcore.imaging import ImageError, decode_image, load_model_input, preprocess_image
from medcore.imaging.preprocess import image_mode, normalize, resize_image
from medcore.record import Preprocessing
from trainer.data.manifest import DataError, LabeledSplit
from trainer.data.presets import Augment


class ManifestDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Yields (float32 CHW input, float32 [L] labels with NaN for unknown).

    Without `augment` every input comes from medcore's `load_model_input` (files) or
    `preprocess_image` (arrays): the very code the service runs. With `augment`, the image is
    decoded and resized by medcore, augmented as 8-bit pixels, then normalised by medcore.
    """

    def __init__(self, split: LabeledSplit, recipe: Preprocessing, augment: Augment | None = None) -> None:
        self.split = split
        self.recipe = recipe
        self.augment = augment

    def __len__(self) -> int:
        return len(self.split)

    def model_input(self, index: int) -> np.ndarray:
        """The evaluation input for sample `index`, exactly as the service would compute it."""
        if self.split.images is not None:
            return preprocess_image(self.split.images[index], self.recipe)
        path = self._path(index)
        try:
            return load_model_input(path.read_bytes(), self.recipe)
        except (ImageError, OSError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None

    def resized_image(self, index: int) -> Image.Image:
        """Sample `index` decoded, cropped and resized by medcore, still 8-bit (before augmentation)."""
        if self.split.images is not None:
            return resize_image(Image.fromarray(self.split.images[index]), self.recipe)
        path = self._path(index)
        size = max(self.recipe.height, self.recipe.width)
        try:
            image = decode_image(path.read_bytes(), mode=image_mode(self.recipe), min_side=size)
        except (ImageError, OSError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
        return resize_image(image, self.recipe)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augment is None:
            pixels = self.model_input(index)
        else:
            pixels = normalize(np.asarray(self.augment(self.resized_image(index))), self.recipe)
        return torch.from_numpy(pixels), torch.from_numpy(self.split.labels[index])

    def _path(self, index: int) -> Path:
        assert self.split.paths is not None
        return self.split.paths[index]
