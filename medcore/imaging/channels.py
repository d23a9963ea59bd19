"""Multi-channel images (microscopy): several grayscale files, or the pages of one TIFF, stacked as channels.

Each channel is decoded to 8-bit grayscale exactly as a single radiograph would be; the
preprocessing module then crops and resizes every channel the same way. The trainer, its cache
and the service all use these functions, so a stacked sample is the same array everywhere.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from medcore.imaging.decode import DEFAULT_MAX_PIXELS, decode_image
from medcore.imaging.decode import _to_mode as to_mode
from medcore.imaging.errors import ImageDecodeError, ImageTooLargeError


def decode_channels(
    files: Sequence[bytes], channels: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> np.ndarray:
    """`channels` grayscale files, or one multi-page TIFF with `channels` pages -> uint8 [H, W, channels].

    All channels must have the same size (they are one field of view).
    """
    if len(files) == 1 and channels > 1:
        planes = _tiff_pages(files[0], max_pixels)
    else:
        planes = [np.asarray(decode_image(data, mode="L", max_pixels=max_pixels, min_side=min_side)) for data in files]
    if len(planes) != channels:
        raise ImageDecodeError(f"expected {channels} channels, got {len(planes)}", code="wrong_channel_count")
    sizes = {plane.shape for plane in planes}
    if len(sizes) > 1:
        found = ", ".join(f"{p.shape[1]}x{p.shape[0]}" for p in planes)
        message = f"channels differ in size ({found}); they must show one field of view"
        raise ImageDecodeError(message, code="channel_size")
    return np.ascontiguousarray(np.stack(planes, axis=-1))


def _tiff_pages(data: bytes, max_pixels: int) -> list[np.ndarray]:
    """Every page of a (multi-page) TIFF as 8-bit grayscale; other formats give their one image."""
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError):
        return [np.asarray(decode_image(data, mode="L", max_pixels=max_pixels))]
    if image.format != "TIFF":
        return [np.asarray(decode_image(data, mode="L", max_pixels=max_pixels))]
    pages = []
    for index in range(int(getattr(image, "n_frames", 1))):
        try:
            image.seek(index)
            width, height = image.size
            if width * height > max_pixels:
                size = f"{width * height} pixels ({width}x{height})"
                raise ImageTooLargeError(f"page {index} has {size}, limit is {max_pixels}")
            page = image.copy()
        except (OSError, EOFError, ValueError) as exc:
            raise ImageDecodeError(f"TIFF page {index} is corrupt or truncated: {exc}", code="corrupt_image") from None
        pages.append(np.asarray(to_mode(page, "L")))  # the single-image rules: 16-bit pages are min-max scaled
    return pages
