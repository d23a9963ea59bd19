"""Training augmentation presets: uint8 [H, W, C] pixels at model size in, same shape out.

They run after medcore's resize (so geometry starts from exactly what evaluation sees) and
before medcore's normalisation. Evaluation uses no preset at all: only medcore. Grayscale and
RGB images are augmented as Pillow images; stacked microscopy channels as one uint8 tensor, so
every channel gets the same crop, rotation and flip.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from medcore.imaging.preprocess import is_single_image
from medcore.record import Preprocessing
from trainer.config import AugmentConfig

_INTERPOLATION = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "lanczos": InterpolationMode.LANCZOS,
    "box": InterpolationMode.BOX,
}


class RandomResolution:
    """With probability `p`, shrink the image (longer side to a random size in [low, high] pixels, with
    antialiasing) and resize it back, so a model trained on sharp images also meets upsampled small ones."""

    def __init__(self, p: float, low: int, high: int, interpolation: InterpolationMode) -> None:
        self.p, self.low, self.high, self.interpolation = p, low, high, interpolation

    def __call__(self, image: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        if torch.rand(1).item() >= self.p:
            return image
        height, width = (image.height, image.width) if isinstance(image, Image.Image) else image.shape[-2:]
        side = int(torch.randint(self.low, self.high + 1, (1,)).item())
        scale = min(1.0, side / max(height, width))
        small = (max(1, round(height * scale)), max(1, round(width * scale)))
        shrunk = T.functional.resize(image, list(small), interpolation=self.interpolation, antialias=True)
        return T.functional.resize(shrunk, [height, width], interpolation=self.interpolation, antialias=True)


class ClassificationPresetTrain:
    """Random resized crop (area close to 1), small rotation, horizontal flip, random grayscale
    (RGB only), optional resolution drop and brightness/contrast jitter (grayscale and RGB only)."""

    def __init__(self, recipe: Preprocessing, config: AugmentConfig) -> None:
        self.single_image = is_single_image(recipe)
        size = (recipe.height, recipe.width)
        steps: list[Callable[..., object]] = []
        if config.crop_scale < 1.0:
            steps.append(
                T.RandomResizedCrop(
                    size,
                    scale=(config.crop_scale, 1.0),
                    ratio=(config.crop_ratio, 1.0 / config.crop_ratio),
                    interpolation=_INTERPOLATION[recipe.interpolation.value],
                    antialias=True,
                )
            )
        if config.rotation > 0:
            steps.append(T.RandomRotation(config.rotation, interpolation=InterpolationMode.BILINEAR, fill=0))
        if config.hflip > 0:
            steps.append(T.RandomHorizontalFlip(config.hflip))
        if config.grayscale > 0 and self.single_image and recipe.channels == 3:
            steps.append(T.RandomGrayscale(config.grayscale))
        if config.resolution > 0:
            low, high = config.resolution_min, config.resolution_max
            steps.append(RandomResolution(config.resolution, low, high, _INTERPOLATION[recipe.interpolation.value]))
        if (config.brightness > 0 or config.contrast > 0) and self.single_image:
            steps.append(T.ColorJitter(brightness=config.brightness, contrast=config.contrast))
        self.transforms = T.Compose(steps) if steps else None

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if self.transforms is None:
            return pixels
        if self.single_image:
            image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
            result = self.transforms(image)
            assert isinstance(result, Image.Image)
            out = np.asarray(result)
            return out[:, :, None] if out.ndim == 2 else out
        tensor = self.transforms(torch.from_numpy(np.array(pixels, copy=True)).permute(2, 0, 1))  # cache: read-only
        assert isinstance(tensor, torch.Tensor)
        return np.ascontiguousarray(tensor.permute(1, 2, 0).numpy())
