"""Decode image bytes by their content (never by file name) into an 8-bit Pillow image."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, UnidentifiedImageError

from medcore.imaging.dicom import decode_dicom, looks_like_dicom
from medcore.imaging.errors import ImageDecodeError, ImageTooLargeError

# Largest image accepted by default: 8192 x 8192 covers every radiograph and most microscopy tiles.
DEFAULT_MAX_PIXELS = 8192 * 8192
READABLE_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "DICOM")
_HIGH_BIT_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
# A JPEG is decoded at a reduced DCT scale while its short side stays this many times the target.
DRAFT_OVERSAMPLE = 4


def decode_image(
    data: bytes,
    *,
    mode: str = "L",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> Image.Image:
    """Decode PNG/JPEG/TIFF/BMP/DICOM bytes into a loaded Pillow image of `mode` ("L" or "RGB").

    16-bit and float images are min-max scaled to 8 bits first. `min_side` lets a JPEG be
    decoded at a reduced scale (Pillow's draft mode) as long as its short side stays at
    least `DRAFT_OVERSAMPLE * min_side` pixels, which is several times faster for large files.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    if not data:
        raise ImageDecodeError("the file is empty", code="empty_file")
    if data[128:132] == b"DICM":
        return _to_mode(decode_dicom(data, max_pixels=max_pixels), mode)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from None
    except UnidentifiedImageError:
        if looks_like_dicom(data):
            return _to_mode(decode_dicom(data, max_pixels=max_pixels), mode)
        raise ImageDecodeError(
            f"not an image in a readable format ({', '.join(READABLE_FORMATS)})", code="not_an_image"
        ) from None
    if image.format not in READABLE_FORMATS:
        raise ImageDecodeError(
            f"image format {image.format} is not accepted; use one of {', '.join(READABLE_FORMATS)}",
            code="not_an_image",
        )
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(f"image has {width * height} pixels ({width}x{height}), limit is {max_pixels}")
    if image.format == "JPEG" and min_side:
        _draft(image, mode, min_side)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{image.format} data is corrupt or truncated: {exc}", code="corrupt_image") from None
    return _to_mode(image, mode)


def _draft(image: Image.Image, mode: str, min_side: int) -> None:
    short = min(image.size)
    ratio = min(1.0, DRAFT_OVERSAMPLE * min_side / short)
    image.draft(mode, (math.ceil(image.size[0] * ratio), math.ceil(image.size[1] * ratio)))


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        image = _to_8bit(image)
    if image.mode == mode:
        return image
    if image.mode not in ("L", "RGB"):
        # Palette, alpha, CMYK...: go through RGB; alpha is dropped.
        image = image.convert("RGB")
    return image.convert(mode)


def _to_8bit(image: Image.Image) -> Image.Image:
    """Min-max scale a 16-bit/32-bit/float grayscale image to 8 bits."""
    pixels = np.asarray(image, dtype=np.float64)
    low, high = float(pixels.min()), float(pixels.max())
    if not math.isfinite(low) or not math.isfinite(high):
        raise ImageDecodeError("image holds non-finite pixel values", code="corrupt_image")
    span = high - low
    scaled = np.zeros_like(pixels) if span == 0 else (pixels - low) * (255.0 / span)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
