"""Apply a model record's preprocessing recipe: the one implementation used everywhere."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from medcore.imaging.budget import DEFAULT_MAX_DECODE_BYTES
from medcore.imaging.channels import decode_channels
from medcore.imaging.decode import DEFAULT_MAX_PIXELS, PixelDecoder, decode_image
from medcore.imaging.intended_use import check_intended_use
from medcore.record import IntendedUse, Interpolation, Preprocessing

_RESAMPLE = {
    Interpolation.NEAREST: Image.Resampling.NEAREST,
    Interpolation.BILINEAR: Image.Resampling.BILINEAR,
    Interpolation.BICUBIC: Image.Resampling.BICUBIC,
    Interpolation.LANCZOS: Image.Resampling.LANCZOS,
    Interpolation.BOX: Image.Resampling.BOX,
}


def image_mode(recipe: Preprocessing) -> str:
    """The Pillow mode a recipe works in: "L" for one channel, "RGB" for three."""
    if not is_single_image(recipe):
        raise ValueError(f"a {recipe.channels}-channel recipe stacks grayscale channels; it has no single image mode")
    return "L" if recipe.channels == 1 else "RGB"


def is_single_image(recipe: Preprocessing) -> bool:
    """True for grayscale and RGB recipes; False for stacked channels (microscopy)."""
    return recipe.channel_names is None and recipe.channels in (1, 3)


def crop_box(size: tuple[int, int], recipe: Preprocessing) -> tuple[int, int, int, int]:
    """The region (left, top, right, bottom) of a `size` = (width, height) image the model sees, before resizing."""
    width, height = size
    if recipe.crop != "center_square":
        return (0, 0, width, height)
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)


def resize_image(image: Image.Image, recipe: Preprocessing) -> Image.Image:
    """Convert, centre-crop and resize: the geometric part of the recipe, still 8-bit."""
    mode = image_mode(recipe)
    if image.mode != mode:
        image = image.convert(mode)
    box = crop_box(image.size, recipe)
    if box != (0, 0, *image.size):
        image = image.crop(box)
    if image.size != (recipe.width, recipe.height):
        image = image.resize((recipe.width, recipe.height), resample=_RESAMPLE[recipe.interpolation])
    return image


def normalize(pixels: np.ndarray, recipe: Preprocessing) -> np.ndarray:
    """uint8 HxW or HxWxC pixels -> float32 CHW, scaled to [0, 1] then standardised."""
    array = np.asarray(pixels, dtype=np.float32) / np.float32(255.0)
    array = array[None, :, :] if array.ndim == 2 else array.transpose(2, 0, 1)
    mean = np.asarray(recipe.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(recipe.std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((array - mean) / std, dtype=np.float32)


def resize_channels(pixels: np.ndarray, recipe: Preprocessing) -> np.ndarray:
    """uint8 [H, W, C] stacked channels -> uint8 [height, width, C], each channel cropped and resized alone."""
    if pixels.ndim != 3 or pixels.shape[2] != recipe.channels:
        raise ValueError(f"expected pixels [H, W, {recipe.channels}], got {list(pixels.shape)}")
    gray = Preprocessing.model_validate(
        {**recipe.model_dump(), "channels": 1, "channel_names": None, "mean": (0.0,), "std": (1.0,)}
    )
    planes = [np.asarray(resize_image(Image.fromarray(pixels[:, :, c]), gray)) for c in range(pixels.shape[2])]
    return np.ascontiguousarray(np.stack(planes, axis=-1))


def preprocess_image(image: Image.Image | np.ndarray, recipe: Preprocessing) -> np.ndarray:
    """A decoded image (Pillow, or a uint8 array such as a MedMNIST sample or a channel stack) -> float32 CHW."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"array images must be uint8, got {image.dtype}")
        if not is_single_image(recipe):
            return normalize(resize_channels(image, recipe), recipe)
        image = Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    return normalize(np.asarray(resize_image(image, recipe)), recipe)


def load_model_input(
    data: bytes,
    recipe: Preprocessing,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    intended_use: IntendedUse | None = None,
    pixels: PixelDecoder | None = None,
) -> np.ndarray:
    """Image file bytes -> float32 CHW model input, exactly as the model was trained to see it.

    `max_bytes` is the decode budget (budget.py); with `intended_use`, a DICOM outside it raises
    `OutsideIntendedUseError` before its pixels are decoded. A stacked-channel recipe reads one
    multi-page TIFF (a page per channel); see `load_stacked_input`. `pixels`: an accelerated decoder
    for the files it accepts (`decode_image`).
    """
    check_intended_use(data, intended_use, max_bytes=max_bytes)
    if not is_single_image(recipe):
        return load_stacked_input([data], recipe, max_pixels=max_pixels, max_bytes=max_bytes)
    image = decode_image(
        data,
        mode=image_mode(recipe),
        max_pixels=max_pixels,
        min_side=max(recipe.height, recipe.width),
        max_bytes=max_bytes,
        pixels=pixels,
    )
    return preprocess_image(image, recipe)


def load_stacked_input(
    files: Sequence[bytes],
    recipe: Preprocessing,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> np.ndarray:
    """One file per channel (in the recipe's channel order), or one multi-page TIFF -> float32 CHW."""
    pixels = decode_channels(
        files, recipe.channels, max_pixels=max_pixels, min_side=max(recipe.height, recipe.width), max_bytes=max_bytes
    )
    return normalize(resize_channels(pixels, recipe), recipe)


def stack_batch(inputs: Sequence[np.ndarray]) -> np.ndarray:
    """Stack CHW inputs into one contiguous NCHW float32 batch."""
    if not inputs:
        raise ValueError("cannot stack an empty batch")
    return np.ascontiguousarray(np.stack(inputs, axis=0), dtype=np.float32)
