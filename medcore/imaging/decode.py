"""Decode image bytes by their content (never by file name) into an 8-bit Pillow image.

This is the decoder boundary: for any byte string it returns an image or raises an `ImageError`
whose `code` and `status` say why (see errors.py). Third-party calls (Pillow, pydicom) are
wrapped one by one, so a bug in our own code still surfaces as itself. Sizes are checked from the
header before any pixel is decoded: the pixel count against `max_pixels`, and the decoded bytes
(all TIFF pages counted) against `max_bytes` (budget.py).

An optional `PixelDecoder` (a GPU JPEG/PNG decoder, `medcore.imaging.gpu_decode`) may decode the pixels of the
8-bit grayscale and RGB files it knows, after every header check here; everything else (sniffing, limits,
errors, draft-mode reduction, mode conversion) stays the rules of this module, and a file it declines or
fails on is decoded here as usual.
"""

from __future__ import annotations

import io
import math
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from medcore.imaging.budget import DEFAULT_MAX_DECODE_BYTES, check_decode_budget
from medcore.imaging.dicom import decode_dicom, looks_like_dicom
from medcore.imaging.errors import ImageDecodeError, ImageTooLargeError, UnsupportedImageError
from medcore.imaging.scale import scale_to_uint8

# Largest image accepted by default: 8192 x 8192 covers every radiograph and most microscopy tiles.
DEFAULT_MAX_PIXELS = 8192 * 8192
READABLE_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "DICOM")
_HIGH_BIT_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
_TWO_BYTE_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
# Modes Pillow converts to RGB (alpha is dropped, palettes expanded).
_CONVERTIBLE_MODES = {"1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "LA", "La", "PA", "CMYK", "YCbCr", "LAB", "HSV"}
# A JPEG is decoded at a reduced DCT scale while its short side stays this many times the target.
DRAFT_OVERSAMPLE = 4
DRAFT_SCALES = (8, 4, 2, 1)  # the DCT scales Pillow's JPEG draft mode can choose, largest first


class PixelDecoder(Protocol):
    """Decodes whole 8-bit files of `formats` elsewhere (on a GPU): uint8 [H, W] for `mode` "L", [H, W, 3] for
    "RGB", or None to decline (unsupported variant, decoder failure), so the host decodes the file instead."""

    formats: frozenset[str]

    def __call__(self, data: bytes, mode: str) -> np.ndarray | None: ...


def decode_image(
    data: bytes,
    *,
    mode: str = "L",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    max_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    pixels: PixelDecoder | None = None,
) -> Image.Image:
    """Decode PNG/JPEG/TIFF/BMP/DICOM bytes into a loaded Pillow image of `mode` ("L" or "RGB").

    16-bit and float images are min-max scaled to 8 bits first (scale.py). `min_side` lets a JPEG
    be decoded at a reduced scale (Pillow's draft mode) as long as its short side stays at least
    `DRAFT_OVERSAMPLE * min_side` pixels, which is several times faster for large files. A
    multi-page TIFF gives its first page; a multi-frame DICOM its first frame. `pixels` decodes the
    files it accepts instead of Pillow (see `PixelDecoder`).
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    if not data:
        raise ImageDecodeError("the file is empty", code="empty_file")
    if data[128:132] == b"DICM":
        return to_mode(decode_dicom(data, max_pixels=max_pixels, max_bytes=max_bytes), mode)
    image = open_image(data)
    if image is None:  # no Pillow format: perhaps a bare ACR-NEMA DICOM data set
        if looks_like_dicom(data):
            return to_mode(decode_dicom(data, max_pixels=max_pixels, max_bytes=max_bytes), mode)
        raise UnsupportedImageError(f"not an image in a readable format ({', '.join(READABLE_FORMATS)})")
    check_image_size(image, max_pixels=max_pixels, max_bytes=max_bytes)
    if pixels is not None and image.format in pixels.formats and image.mode in ("L", "RGB"):
        accelerated = _decode_elsewhere(data, image, mode, min_side, pixels)
        if accelerated is not None:
            return accelerated
    if image.format == "JPEG" and min_side:
        _draft(image, mode, min_side)
    load_image(image)
    return to_mode(image, mode)


def open_image(data: bytes) -> Image.Image | None:
    """Pillow's lazy open (header only) of one of our formats; None when Pillow knows no format."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from None
    except UnidentifiedImageError:
        return None
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's plugins raise OSError, SyntaxError, struct.error... on bad headers
        message = f"image header is corrupt or truncated ({type(exc).__name__})"
        raise ImageDecodeError(message, code="corrupt_image") from None
    if image.format not in READABLE_FORMATS:
        raise UnsupportedImageError(
            f"image format {image.format} is not accepted; use one of {', '.join(READABLE_FORMATS)}"
        )
    return image


def check_image_size(image: Image.Image, *, max_pixels: int, max_bytes: int) -> int:
    """Refuse, from the header alone, images over `max_pixels` or whose pages need over `max_bytes`."""
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(f"image has {width * height} pixels ({width}x{height}), limit is {max_pixels}")
    needed = check_decode_budget(
        width, height, len(image.getbands()), _bytes_per_sample(image.mode), 1, max_bytes=max_bytes
    )
    if image.format != "TIFF":
        return needed
    return _tiff_budget(image, needed, max_bytes)


def _tiff_budget(image: Image.Image, first: int, max_bytes: int) -> int:
    """Add every further page's decoded size, stopping as soon as the sum passes `max_bytes`."""
    total, index = first, 1
    try:
        while True:
            try:
                image.seek(index)
            except EOFError:
                break
            width, height = image.size
            total += width * height * len(image.getbands()) * _bytes_per_sample(image.mode)
            if total > max_bytes:
                message = f"the TIFF's first {index + 1} pages decode to {total} bytes, the limit is {max_bytes}"
                raise ImageTooLargeError(message, code="decode_budget_exceeded")
            index += 1
        image.seek(0)
    except ImageTooLargeError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # a corrupt IFD chain
        raise ImageDecodeError(f"TIFF page {index} is corrupt ({type(exc).__name__})", "corrupt_image") from None
    return total


def load_image(image: Image.Image) -> None:
    """Decode the pixels (Pillow's `load`), with decoder failures as `ImageDecodeError`."""
    try:
        image.load()
    except MemoryError:
        raise
    except Exception as exc:  # truncated or damaged data: OSError, SyntaxError, ValueError, zlib errors...
        raise ImageDecodeError(f"{image.format} data is corrupt or truncated: {exc}", code="corrupt_image") from None


def _bytes_per_sample(mode: str) -> int:
    if mode in _TWO_BYTE_MODES:
        return 2
    return 4 if mode in ("I", "F") else 1


def _draft_request(size: tuple[int, int], min_side: int) -> tuple[int, int]:
    ratio = min(1.0, DRAFT_OVERSAMPLE * min_side / min(size))
    return (math.ceil(size[0] * ratio), math.ceil(size[1] * ratio))


def _draft(image: Image.Image, mode: str, min_side: int) -> None:
    image.draft(mode, _draft_request(image.size, min_side))


def draft_scale(size: tuple[int, int], min_side: int) -> int:
    """The DCT scale (1, 2, 4 or 8) by which `_draft` has Pillow decode a JPEG of `size` (Pillow's own rule:
    the largest scale that keeps both sides at least the requested size)."""
    requested = _draft_request(size, min_side)
    fits = min(size[0] // requested[0], size[1] // requested[1])
    return next(scale for scale in DRAFT_SCALES if fits >= scale or scale == 1)


def _decode_elsewhere(
    data: bytes, image: Image.Image, mode: str, min_side: int | None, pixels: PixelDecoder
) -> Image.Image | None:
    """`pixels`' decode of an 8-bit L or RGB file: reduced as draft mode would (a box filter by the same
    scale, for JPEGs), then converted like a host decode. None when it declines or disagrees on the size."""
    wanted = "L" if "L" in (mode, image.mode) else "RGB"  # an RGB JPEG to "L": its luma, as draft mode decodes
    array = pixels(data, wanted)
    width, height = image.size
    shape = (height, width) if wanted == "L" else (height, width, 3)
    if array is None or array.dtype != np.uint8 or array.shape != shape:
        return None
    decoded = Image.fromarray(array, mode=wanted)
    scale = draft_scale(image.size, min_side) if image.format == "JPEG" and min_side else 1
    if scale > 1:
        decoded = decoded.reduce(scale)
    return to_mode(decoded, mode)


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """A loaded image in "L" or "RGB": high-bit-depth grayscale min-max scaled, other modes converted."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        image = Image.fromarray(scale_to_uint8(image), mode="L")
    if image.mode == mode:
        return image
    if image.mode not in _CONVERTIBLE_MODES:
        raise UnsupportedImageError(f"pixel format {image.mode} is not supported", code="unsupported_pixel_format")
    try:
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return image.convert(mode)
    except MemoryError:
        raise
    except Exception as exc:  # e.g. LAB or HSV data Pillow cannot convert
        raise UnsupportedImageError(
            f"pixel format {image.mode} could not be converted ({type(exc).__name__})", code="unsupported_pixel_format"
        ) from None
