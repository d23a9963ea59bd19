"""Multi-channel images (microscopy): several grayscale files, or the pages of one TIFF, stacked as channels.

Each channel is decoded to 8-bit grayscale exactly as a single radiograph would be; the
preprocessing module then crops and resizes every channel the same way. The trainer, its cache
and the service all use these functions, so a stacked sample is the same array everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medcore.imaging.budget import DEFAULT_MAX_DECODE_BYTES
from medcore.imaging.decode import DEFAULT_MAX_PIXELS, check_image_size, decode_image, open_image, to_mode
from medcore.imaging.errors import ImageDecodeError, ImageTooLargeError, UnusableImageError


def decode_channels(
    files: Sequence[bytes],
    channels: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    max_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> np.ndarray:
    """`channels` grayscale files, or one multi-page TIFF with `channels` pages -> uint8 [H, W, channels].

    All channels must have the same size (they are one field of view). `max_bytes` bounds each file
    (a TIFF: all its pages together).
    """
    if len(files) == 1 and channels > 1:
        planes = _tiff_pages(files[0], max_pixels, max_bytes)
    else:
        planes = [
            np.asarray(decode_image(data, mode="L", max_pixels=max_pixels, min_side=min_side, max_bytes=max_bytes))
            for data in files
        ]
    if len(planes) != channels:
        raise UnusableImageError(f"expected {channels} channels, got {len(planes)}", code="wrong_channel_count")
    sizes = {plane.shape for plane in planes}
    if len(sizes) > 1:
        found = ", ".join(f"{p.shape[1]}x{p.shape[0]}" for p in planes)
        message = f"channels differ in size ({found}); they must show one field of view"
        raise UnusableImageError(message, code="channel_size")
    return np.ascontiguousarray(np.stack(planes, axis=-1))


def _tiff_pages(data: bytes, max_pixels: int, max_bytes: int) -> list[np.ndarray]:
    """Every page of a (multi-page) TIFF as 8-bit grayscale; other formats give their one image."""
    image = open_image(data) if data else None
    if image is None or image.format != "TIFF":
        return [np.asarray(decode_image(data, mode="L", max_pixels=max_pixels, max_bytes=max_bytes))]
    check_image_size(image, max_pixels=max_pixels, max_bytes=max_bytes)  # every page, before decoding any
    pages = []
    for index in range(int(getattr(image, "n_frames", 1))):
        try:
            image.seek(index)
            if image.width * image.height > max_pixels:
                size = f"{image.width * image.height} pixels ({image.width}x{image.height})"
                raise ImageTooLargeError(f"TIFF page {index} has {size}, limit is {max_pixels}")
            page = image.copy()
        except (ImageTooLargeError, MemoryError):
            raise
        except Exception as exc:  # Pillow's TIFF decoder on damaged pages
            raise ImageDecodeError(f"TIFF page {index} is corrupt or truncated: {exc}", code="corrupt_image") from None
        pages.append(np.asarray(to_mode(page, "L")))  # the single-image rules: 16-bit pages are min-max scaled
    return pages
