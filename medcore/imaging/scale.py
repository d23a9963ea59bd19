"""Min-max scaling of high-bit-depth pixels to 8 bits: the one implementation, in bounded memory.

16-bit PNG/TIFF images and DICOM values after the modality and VOI LUTs all come here. The result is
`rint((v - low) * 255 / (high - low))` over the (transformed) values, as in float64, but no float64
copy of the whole image is ever made: integer images go through a lookup table with one entry per
stored value (each entry computed in float64, so the figures are exact), and other images are
scaled strip by strip.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image

from medcore.imaging.errors import ImageDecodeError

Transform = Callable[[np.ndarray], np.ndarray]
# Elements handled at once on the strip path; a few MiB of float64 at most.
STRIP_ELEMENTS = 1 << 19
# Integer images whose values span at most this many steps use a lookup table.
LUT_MAX_SPAN = 1 << 16
_INTEGER_IMAGE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def scale_to_uint8(pixels: np.ndarray | Image.Image, transform: Transform | None = None) -> np.ndarray:
    """Min-max scale `transform(pixels)` (elementwise, e.g. DICOM LUTs) onto uint8 0..255; constant -> 0.

    `pixels` is a numpy array [H, ...] or a loaded single-band Pillow image (read in row strips,
    never copied whole). Non-finite values raise `ImageDecodeError` (corrupt_image).
    """
    rows, shape, integer = _source(pixels)
    step = max(1, STRIP_ELEMENTS // max(1, math.prod(shape[1:])))
    starts = range(0, shape[0], step)
    out = np.empty(shape, dtype=np.uint8)
    extrema = _extrema(rows, starts, step) if integer else None
    if extrema is not None and extrema[1] - extrema[0] <= LUT_MAX_SPAN:
        low, high = extrema
        lut = _lookup_table(low, high, transform, rows, starts, step)
        for start in starts:
            out[start : start + step] = lut[rows(start, start + step).astype(np.int64) - low]
        return out

    def mapped(start: int) -> np.ndarray:
        strip = np.asarray(rows(start, start + step), dtype=np.float64)
        return transform(strip) if transform is not None else strip

    low_f = min(float(np.min(mapped(start))) for start in starts)
    high_f = max(float(np.max(mapped(start))) for start in starts)
    for start in starts:
        out[start : start + step] = _rescale(mapped(start), low_f, high_f)
    return out


def _source(pixels: np.ndarray | Image.Image) -> tuple[Callable[[int, int], np.ndarray], tuple[int, ...], bool]:
    if isinstance(pixels, Image.Image):
        image = pixels
        width, height = image.size
        if width * height == 0:
            raise ImageDecodeError(f"image has no pixels ({width}x{height})", code="corrupt_image")

        def image_rows(start: int, stop: int) -> np.ndarray:
            return np.asarray(image.crop((0, start, width, min(stop, height))))

        return image_rows, (height, width), image.mode in _INTEGER_IMAGE_MODES
    array = np.asarray(pixels)
    if array.ndim == 0 or array.size == 0:
        raise ImageDecodeError(f"image has no pixels (shape {list(array.shape)})", code="corrupt_image")

    def array_rows(start: int, stop: int) -> np.ndarray:
        return array[start:stop]

    return array_rows, tuple(array.shape), bool(np.issubdtype(array.dtype, np.integer))


def _extrema(rows: Callable[[int, int], np.ndarray], starts: range, step: int) -> tuple[int, int]:
    # Strip by strip (Pillow's getextrema does not take every 16-bit mode, e.g. I;16B).
    low, high = None, None
    for start in starts:  # one strip alive at a time: a Pillow image's strips are copies
        strip = rows(start, start + step)
        strip_low, strip_high = int(strip.min()), int(strip.max())
        low = strip_low if low is None else min(low, strip_low)
        high = strip_high if high is None else max(high, strip_high)
    assert low is not None and high is not None  # _source refuses empty images
    return low, high


def _lookup_table(
    low: int, high: int, transform: Transform | None, rows: Callable[[int, int], np.ndarray], starts: range, step: int
) -> np.ndarray:
    """uint8 table indexed by `value - low`; min and max taken over the values the image holds."""
    domain = np.arange(low, high + 1, dtype=np.int64)
    if transform is None:
        return _rescale(domain.astype(np.float64), float(low), float(high))
    mapped = np.asarray(transform(domain), dtype=np.float64)
    present = np.zeros(domain.size, dtype=bool)
    for start in starts:  # a transform need not be monotonic (LUT sequences): use the values present
        present[rows(start, start + step).astype(np.int64) - low] = True
    return _rescale(mapped, float(mapped[present].min()), float(mapped[present].max()))


def _rescale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ImageDecodeError("image holds non-finite pixel values", code="corrupt_image")
    if high == low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)
