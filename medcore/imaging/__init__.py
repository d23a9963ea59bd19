"""Decode medical images by content and turn them into model input, without torch."""

from medcore.imaging.budget import DEFAULT_MAX_DECODE_BYTES, check_decode_budget
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
from medcore.imaging.intended_use import check_intended_use
from medcore.imaging.preprocess import (
    crop_box,
    load_model_input,
    load_stacked_input,
    preprocess_image,
    resize_image,
    stack_batch,
)
from medcore.imaging.scale import scale_to_uint8

__all__ = [
    "DEFAULT_MAX_DECODE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_ERROR_STATUSES",
    "STATUS_BY_CODE",
    "ImageDecodeError",
    "ImageError",
    "ImageTooLargeError",
    "OutsideIntendedUseError",
    "UnsupportedImageError",
    "UnusableImageError",
    "check_decode_budget",
    "check_intended_use",
    "crop_box",
    "decode_channels",
    "decode_image",
    "load_model_input",
    "load_stacked_input",
    "preprocess_image",
    "resize_image",
    "scale_to_uint8",
    "stack_batch",
]
