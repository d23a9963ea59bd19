"""Decode medical images by content and turn them into model input, without torch."""

from medcore.imaging.channels import decode_channels
from medcore.imaging.decode import DEFAULT_MAX_PIXELS, decode_image
from medcore.imaging.errors import ImageDecodeError, ImageError, ImageTooLargeError
from medcore.imaging.preprocess import load_model_input, load_stacked_input, preprocess_image, stack_batch

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageDecodeError",
    "ImageError",
    "ImageTooLargeError",
    "decode_channels",
    "decode_image",
    "load_model_input",
    "load_stacked_input",
    "preprocess_image",
    "stack_batch",
]
