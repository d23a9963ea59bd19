"""DICOM radiographs -> 8-bit grayscale: modality LUT, VOI LUT (window), MONOCHROME1 inversion."""

from __future__ import annotations

import io

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from medcore.imaging.errors import ImageDecodeError, ImageTooLargeError

# Groups a DICOM data set without the 128-byte preamble (old ACR-NEMA files) starts with, little endian.
_BARE_DATASET_STARTS = (b"\x02\x00", b"\x08\x00")


def looks_like_dicom(data: bytes) -> bool:
    """True for Part-10 files ("DICM" after the preamble) and for bare ACR-NEMA-style data sets."""
    return data[128:132] == b"DICM" or data[:2] in _BARE_DATASET_STARTS


def decode_dicom(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode the first frame of a DICOM image into an 8-bit "L" or "RGB" Pillow image.

    Stored values go through the modality LUT (rescale slope/intercept) and the VOI LUT or
    window the file names, are min-max scaled to 8 bits, and MONOCHROME1 images are inverted
    so that, as in MONOCHROME2, higher means brighter.
    """
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        if "PixelData" not in dataset:
            raise ImageDecodeError("DICOM file holds no pixel data", code="not_an_image")
        if "TransferSyntaxUID" not in dataset.file_meta:
            dataset.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        rows, cols = int(dataset.Rows), int(dataset.Columns)
    except (InvalidDicomError, AttributeError, KeyError, ValueError, TypeError, EOFError) as exc:
        if isinstance(exc, ImageDecodeError):
            raise
        raise ImageDecodeError(f"DICOM header is unreadable: {exc}", code="corrupt_image") from None
    if rows * cols > max_pixels:
        raise ImageTooLargeError(f"image has {rows * cols} pixels ({cols}x{rows}), limit is {max_pixels}")
    try:
        pixels = dataset.pixel_array
    except Exception as exc:  # pydicom raises many types for bad or unsupported pixel data
        raise ImageDecodeError(f"DICOM pixel data could not be decoded: {exc}", code="corrupt_image") from None
    if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
    if pixels.ndim == 3:
        return Image.fromarray(_to_uint8(pixels), mode="RGB")
    values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset)
    gray = _to_uint8(values)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return Image.fromarray(gray, mode="L")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)
