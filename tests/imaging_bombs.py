"""Builders of hostile images for the imaging tests: small files whose headers ask for huge decodes."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

SMALL_DICOM = "dicom_samples/pydicom_dicomdirtests_CR1_6154_16x16_MONOCHROME1.dcm"


def png_with_size(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A PNG whose IHDR claims width x height, with one tiny compressed row of data (a dimension bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def png16_ramp(side: int) -> bytes:
    """A real side x side 16-bit grayscale PNG (a repeating ramp), compressed row by row: ~150 KB for 8192."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\0" + (np.arange(side, dtype=np.uint32) % 4096).astype(">u2").tobytes()  # filter byte 0, big endian
    deflater = zlib.compressobj(9)
    idat = b"".join(deflater.compress(row) for _ in range(side)) + deflater.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def base_dataset(shared_data: Path) -> pydicom.Dataset:
    return pydicom.dcmread(shared_data / SMALL_DICOM)


def dicom_bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multi_frame_dicom(shared_data: Path, rows: int, cols: int, frames: int, pixel_frames: int = 1) -> bytes:
    """Explicit VR LE, 16-bit: the header says `frames` frames; the data holds `pixel_frames` of them."""
    dataset = base_dataset(shared_data)
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = rows, cols, frames
    values = (np.arange(rows * cols * pixel_frames, dtype=np.uint32) % 4096).astype(np.uint16)
    dataset.PixelData = values.tobytes()
    return dicom_bytes(dataset)


def deflated_dicom(shared_data: Path, rows: int, cols: int, frames: int, pixel_bytes: int) -> bytes:
    """Deflated Explicit VR LE whose PixelData inflates to `pixel_bytes` zeros, streamed (never held whole)."""
    dataset = base_dataset(shared_data)
    del dataset.PixelData
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = rows, cols, frames
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, dataset)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflater.compress(body.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes))]
    zeros, left = bytes(1 << 24), pixel_bytes
    while left > 0:
        parts.append(deflater.compress(zeros[: min(left, len(zeros))]))
        left -= len(zeros)
    parts.append(deflater.flush())
    meta = pydicom.dataset.FileMetaDataset(dataset.file_meta)
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    header = DicomBytesIO()
    header.is_little_endian, header.is_implicit_VR = True, False
    write_file_meta_info(header, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + header.getvalue() + b"".join(parts)


def deflated_copy(shared_data: Path) -> bytes:
    """The small real DICOM saved with Deflate (a well-formed deflated file)."""
    dataset = base_dataset(shared_data)
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return dicom_bytes(dataset)


def many_page_tiff(pages: int, side: int) -> bytes:
    page = Image.fromarray(np.zeros((side, side), np.uint8))
    buffer = io.BytesIO()
    page.save(buffer, format="TIFF", save_all=True, append_images=[page] * (pages - 1), compression="tiff_deflate")
    return buffer.getvalue()


__all__ = ["ExplicitVRLittleEndian", "deflated_copy", "deflated_dicom", "many_page_tiff", "multi_frame_dicom"]
