"""Decode medical images by content and turn them into model input, without torch."""

from medcore.imaging.channels import decode_channels
from medcore.imaging.decode import DEFAULT_MAX_PIXELS, decode_image
from medcore.imaging.errors import (
    IMAGE_ERROR_STATUSES,
    STATUS_BY_CODE,
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    OutsideIntendedUseError,
    UnsupportedImageError,
    UnusableImageError,
)
from medcore.imaging.preprocess import load_model_input, load_stacked_input, preprocess_image, stack_batch

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_ERROR_STATUSES",
    "STATUS_BY_CODE",
    "ImageDecodeError",
    "ImageError",
    "ImageTooLargeError",
    "OutsideIntendedUseError",
    "UnsupportedImageError",
    "UnusableImageError",
    "decode_channels",
    "decode_image",
    "load_model_input",
    "load_stacked_input",
    "preprocess_image",
    "stack_batch",
]
