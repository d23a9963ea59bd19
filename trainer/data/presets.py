"""Training augmentation presets: 8-bit Pillow image at model size in, same size out.

They run after medcore's resize (so geometry starts from exactly what evaluation sees) and
before medcore's normalisation. Evaluation uses no preset at all: only medcore.
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from medcore.record import Preprocessing
from trainer.config import AugmentConfig

Augment = Callable[[Image.Image], Image.Image]

_INTERPOLATION = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "lanczos": InterpolationMode.LANCZOS,
    "box": InterpolationMode.BOX,
}


class ClassificationPresetTrain:
    """Random resized crop (area close to 1), small rotation, horizontal flip, optional jitter."""

    def __init__(self, recipe: Preprocessing, config: AugmentConfig) -> None:
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
        if config.brightness > 0 or config.contrast > 0:
            steps.append(T.ColorJitter(brightness=config.brightness, contrast=config.contrast))
        self.transforms = T.Compose(steps) if steps else None

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.transforms is None:
            return image
        result = self.transforms(image)
        assert isinstance(result, Image.Image)
        return result
