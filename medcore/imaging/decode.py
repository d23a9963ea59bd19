"""Decode image bytes by their content (never by file name) into an 8-bit Pillow image.

This is the decoder boundary: for any byte string it returns an image or raises an `ImageError`
whose `code` and `status` say why (see errors.py). Third-party calls (Pillow, pydicom) are
wrapped one by one, so a bug in our own code still surfaces as itself. Sizes are checked from the
header before any pixel is decoded: the pixel count against `max_pixels`, and the decoded bytes
(all TIFF pages counted) against `max_bytes` (budget.py).
"""

from __future__ import annotations

import io
import math

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


def decode_image(
    data: bytes,
    *,
    mode: str = "L",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    max_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> Image.Image:
    """Decode PNG/JPEG/TIFF/BMP/DICOM bytes into a loaded Pillow image of `mode` ("L" or "RGB").

    16-bit and float images are min-max scaled to 8 bits first (scale.py). `min_side` lets a JPEG
    be decoded at a reduced scale (Pillow's draft mode) as long as its short side stays at least
    `DRAFT_OVERSAMPLE * min_side` pixels, which is several times faster for large files. A
    multi-page TIFF gives its first page; a multi-frame DICOM its first frame.
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


def _draft(image: Image.Image, mode: str, min_side: int) -> None:
    short = min(image.size)
    ratio = min(1.0, DRAFT_OVERSAMPLE * min_side / short)
    image.draft(mode, (math.ceil(image.size[0] * ratio), math.ceil(image.size[1] * ratio)))


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
