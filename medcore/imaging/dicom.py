"""DICOM radiographs -> 8-bit images: modality LUT, VOI LUT (window), MONOCHROME1 inversion.

Safety rules, checked from the header before any pixel is decoded:
- rows x columns against `max_pixels`; rows x columns x samples x bytes per sample x NumberOfFrames
  against `max_bytes` (budget.py).
- Deflated Explicit VR Little Endian is inflated with a bound (`max_bytes` plus a header allowance):
  its inflated size is unknown until inflated, so a stream that inflates past it is refused (413).
- Multi-frame rule: the FIRST frame is the model input and only that frame is decoded
  (`pydicom.pixels.pixel_array(ds, index=0)`); every frame still counts against the byte budget.
- A data set cut short (an image header, Rows, without its pixel data; or nothing readable after the file
  meta) is 400 `corrupt_image`; a data set without an image header or pixels (an SR, a KO) is 415 `not_an_image`.
- Transfer syntaxes without an installed decoder are 415 `unsupported_transfer_syntax`
  (pylibjpeg with its libjpeg, openjpeg and rle plugins covers JPEG Lossless, JPEG-LS, JPEG 2000, RLE).
Messages name attributes, never their values: DICOM headers carry patient data.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pydicom
import pydicom.config
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from medcore.imaging.budget import check_decode_budget
from medcore.imaging.errors import (
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
    UnusableImageError,
)
from medcore.imaging.scale import scale_to_uint8

# pydicom's validation warnings quote the offending element values (which may be patient data):
# never emit them. Invalid values we rely on are checked below and reported by attribute name only.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
# Groups a DICOM data set without the 128-byte preamble (old ACR-NEMA files) starts with, little endian.
_BARE_DATASET_STARTS = (b"\x02\x00", b"\x08\x00")
# Room for the non-pixel part of a deflated data set on top of the pixel budget.
DEFLATE_HEADER_ALLOWANCE = 4 * 1024 * 1024
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_NUMERIC_ATTRIBUTES = ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth")


def looks_like_dicom(data: bytes) -> bool:
    """True for Part-10 files ("DICM" after the preamble) and for bare ACR-NEMA-style data sets."""
    return data[128:132] == b"DICM" or data[:2] in _BARE_DATASET_STARTS


def decode_dicom(data: bytes, *, max_pixels: int, max_bytes: int) -> Image.Image:
    """Decode the first frame of a DICOM image into an 8-bit "L" or "RGB" Pillow image.

    Stored values go through the modality LUT (rescale slope/intercept) and the VOI LUT or
    window the file names, are min-max scaled to 8 bits, and MONOCHROME1 images are inverted
    so that, as in MONOCHROME2, higher means brighter.
    """
    dataset = read_dicom(data, max_bytes=max_bytes)
    check_dicom_size(dataset, max_pixels=max_pixels, max_bytes=max_bytes)
    pixels = _first_frame(dataset)
    photometric = str(attribute(dataset, "PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if pixels.ndim == 2 and photometric == "PALETTE COLOR":
        with _third_party("the palette colour lookup table"):
            pixels = apply_color_lut(pixels, dataset)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return Image.fromarray(scale_to_uint8(pixels), mode="RGB")
    if pixels.ndim != 2:
        raise UnusableImageError(
            f"DICOM frame has shape {list(pixels.shape)}; expected 1 or 3 samples per pixel", code="wrong_channel_count"
        )
    _require_numbers(dataset)

    def luts(values: np.ndarray) -> np.ndarray:
        with _third_party("the modality or VOI LUT"):
            return np.asarray(apply_voi_lut(apply_modality_lut(values, dataset), dataset))

    gray = scale_to_uint8(pixels, luts)
    if photometric == "MONOCHROME1":
        np.subtract(255, gray, out=gray)
    return Image.fromarray(gray, mode="L")


def read_dicom(data: bytes, *, max_bytes: int, stop_before_pixels: bool = False) -> Dataset:
    """Parse a Part-10 file or a bare data set (no pixels decoded); Deflate is inflated with a bound."""
    with _third_party("the DICOM header"):
        meta = _file_meta(data)
        transfer_syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        if meta is not None and transfer_syntax == DeflatedExplicitVRLittleEndian:
            dataset = _read_deflated(data, meta, max_bytes, stop_before_pixels)
        else:
            dataset = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=stop_before_pixels)
        if "TransferSyntaxUID" not in dataset.file_meta:
            dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    if meta is not None and len(dataset) == 0 and len(data) > _meta_end(meta) + 8:
        # pydicom gives up on a data set cut inside an undefined-length element and returns it empty
        raise ImageDecodeError("the DICOM data set after the file meta is truncated or damaged", "corrupt_image")
    return dataset


def _meta_end(meta: FileMetaDataset) -> int:
    """Offset of the data set: preamble, prefix, and the group length element plus the group it counts."""
    try:
        return 132 + 12 + int(meta.get("FileMetaInformationGroupLength", 0) or 0)
    except (TypeError, ValueError):  # a damaged group length: no claim about what follows
        return 1 << 62


def check_dicom_size(dataset: Dataset, *, max_pixels: int, max_bytes: int) -> None:
    """Pixel data present, size within `max_pixels` and all frames within `max_bytes`, the decoder installed."""
    if not any(keyword in dataset for keyword in _PIXEL_KEYWORDS):
        if "Rows" in dataset:  # an image's header without its pixels: pydicom drops a pixel element cut short
            raise ImageDecodeError("DICOM file holds no pixel data (missing, or cut short)", code="corrupt_image")
        raise UnsupportedImageError("DICOM file holds no pixel data", code="not_an_image")
    rows, cols = _header_int(dataset, "Rows"), _header_int(dataset, "Columns")
    if rows * cols > max_pixels:
        raise ImageTooLargeError(f"image has {rows * cols} pixels ({cols}x{rows}), limit is {max_pixels}")
    pixel_bytes(dataset, max_bytes=max_bytes)
    with _third_party("DICOM attribute TransferSyntaxUID"):
        syntax = UID(str(dataset.file_meta.TransferSyntaxUID))
    if not can_decode(syntax):
        name = syntax.name if syntax.is_transfer_syntax else "an unknown transfer syntax"
        raise UnsupportedImageError(f"no decoder is installed for {name}", code="unsupported_transfer_syntax")


def can_decode(syntax: UID) -> bool:
    """Whether the installed pixel decoders read this transfer syntax (Deflate is inflated here first)."""
    if syntax == DeflatedExplicitVRLittleEndian:
        return True
    try:
        return bool(get_decoder(syntax).is_available)
    except NotImplementedError:
        return False


def decodable_transfer_syntaxes() -> tuple[UID, ...]:
    """Every transfer syntax `decode_dicom` reads with the decoders installed: what a DICOM node may accept."""
    return tuple(UID(syntax) for syntax in AllTransferSyntaxes if can_decode(UID(syntax)))


def pixel_bytes(dataset: Dataset, *, max_bytes: int) -> int:
    """Decoded size of all frames from the header (rows x columns x samples x bytes x frames), within budget."""
    rows, cols = _header_int(dataset, "Rows"), _header_int(dataset, "Columns")
    samples = _header_int(dataset, "SamplesPerPixel", 1)
    bits = _header_int(dataset, "BitsAllocated", 16)
    frames = _header_int(dataset, "NumberOfFrames", 1) or 1
    return check_decode_budget(cols, rows, samples, max(1, math.ceil(bits / 8)), frames, max_bytes=max_bytes)


def _first_frame(dataset: Dataset) -> np.ndarray:
    with _third_party("the DICOM pixel data"):
        return np.asarray(pixel_array(dataset, index=0))


def _file_meta(data: bytes) -> FileMetaDataset | None:
    if data[128:132] != b"DICM":
        return None
    stream = io.BytesIO(data)
    stream.seek(132)
    return _read_file_meta_info(stream)


def _read_deflated(data: bytes, meta: FileMetaDataset, max_bytes: int, stop_before_pixels: bool) -> Dataset:
    stream = io.BytesIO(data)
    stream.seek(132)
    _read_file_meta_info(stream)  # positions the stream after the (uncompressed) file meta group
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        # First only the header allowance: the header's own sizes then bound the rest of the stream.
        head = inflater.decompress(stream.read(), DEFLATE_HEADER_ALLOWANCE)
        limit = _pixel_bytes_from_head(head, max_bytes) + DEFLATE_HEADER_ALLOWANCE
        inflated = head + inflater.decompress(inflater.unconsumed_tail, limit + 1 - len(head))
    except zlib.error:
        raise ImageDecodeError("the Deflate-compressed DICOM data set is corrupt", code="corrupt_image") from None
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise ImageTooLargeError(
            f"the Deflate-compressed DICOM data set inflates to more than {limit} bytes", code="decode_budget_exceeded"
        )
    stop = _at_pixels if stop_before_pixels else None
    dataset = read_dataset(io.BytesIO(inflated), is_implicit_VR=False, is_little_endian=True, stop_when=stop)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # the inflated data set is plain explicit VR little endian
    dataset.file_meta = meta
    return dataset


def _pixel_bytes_from_head(head: bytes, max_bytes: int) -> int:
    """The budget check on the first inflated bytes; `max_bytes` when the header does not fit in them."""
    try:
        header = read_dataset(io.BytesIO(head), is_implicit_VR=False, is_little_endian=True, stop_when=_at_pixels)
        if "Rows" not in header:
            return max_bytes
    except Exception:  # the header runs past the allowance (or is damaged): the plain bound applies
        return max_bytes
    return pixel_bytes(header, max_bytes=max_bytes)


def _at_pixels(tag: object, vr: object, length: object) -> bool:
    return tag == 0x7FE00010


def attribute(dataset: Dataset, keyword: str, default: Any = None) -> Any:
    """`dataset.get`, whose lazy conversion of a damaged element raises `ImageDecodeError` naming the keyword."""
    with _third_party(f"DICOM attribute {keyword}"):
        return dataset.get(keyword, default)


def _header_int(dataset: Dataset, keyword: str, default: int | None = None) -> int:
    value = attribute(dataset, keyword, default)
    try:
        if value is None or isinstance(value, bytes | bytearray):
            raise TypeError
        return int(value)
    except (TypeError, ValueError):
        raise ImageDecodeError(f"DICOM attribute {keyword} is missing or not an integer", "corrupt_image") from None


def _require_numbers(dataset: Dataset) -> None:
    """The LUT attributes we apply must be finite numbers (pydicom keeps invalid strings as they are)."""
    for keyword in _NUMERIC_ATTRIBUTES:
        if keyword not in dataset:
            continue
        value = attribute(dataset, keyword)
        values = list(value) if isinstance(value, pydicom.multival.MultiValue) else [value]
        if not values or not all(_is_finite_number(v) for v in values):
            raise ImageDecodeError(f"DICOM attribute {keyword} is not a number", code="corrupt_image")


def _is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@contextmanager
def _third_party(what: str) -> Iterator[None]:
    """pydicom and its plugins raise many types for bad data: each becomes a corrupt-image error naming `what`."""
    try:
        yield
    except (ImageError, MemoryError):
        raise
    except Exception as exc:
        raise ImageDecodeError(f"{what} could not be read ({type(exc).__name__})", code="corrupt_image") from None
