"""A seeded fuzz corpus of hostile image bytes: byte flips and truncations of real PNG/JPEG/TIFF/DICOM files.

Used by tests/test_decoder_fuzz.py (the decoder) and by the service-level fuzz (a real server).
Sources are small real files from `../shared/data` (the TIFF re-encodes a real radiograph, since the
data holds none); the same seed always gives the same cases.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# (kind, path under the shared data folder); small files keep a few hundred cases fast.
SOURCES = (
    ("png", "covid_chestxray_ieee8023_subset/images/16745_3_1.png"),
    ("jpeg", "kermany_chest_xray_subset/images/person407_virus_812.jpeg"),
    ("dicom-explicit", "dicom_samples/pydicom_dicomdirtests_CR1_6154_16x16_MONOCHROME1.dcm"),
    ("dicom-bare", "dicom_samples/CR-MONO1-10-chest_MONOCHROME1_no_meta.dcm"),
    (
        "dicom-jpeg",
        "dicom_samples/SIIM_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819_CR_chest_MONOCHROME2_jpeg.dcm",
    ),
)
TIFF_FROM = "kermany_chest_xray_subset/images/person407_virus_812.jpeg"
HEADER_BYTES = 512  # half of the flips land here, where parsers are most fragile


def source_files(shared_data: Path) -> list[tuple[str, bytes]]:
    """The unmutated sources: (kind, bytes)."""
    files = [(kind, (shared_data / path).read_bytes()) for kind, path in SOURCES]
    with Image.open(shared_data / TIFF_FROM) as image:
        buffer = io.BytesIO()
        image.convert("L").save(buffer, format="TIFF", compression="tiff_deflate")
        files.append(("tiff", buffer.getvalue()))
    return files


def fuzz_cases(shared_data: Path, seed: int, count: int) -> list[tuple[str, bytes]]:
    """`count` cases (name, bytes): round-robin over the sources, alternately flipped and truncated."""
    rng = np.random.default_rng(seed)
    sources = source_files(shared_data)
    cases = []
    for index in range(count):
        kind, data = sources[index % len(sources)]
        if index // len(sources) % 2 == 0:
            cases.append((f"{kind}-flip-{index}", _flip(data, rng)))
        else:
            cases.append((f"{kind}-cut-{index}", _truncate(data, rng)))
    return cases


def _flip(data: bytes, rng: np.random.Generator) -> bytes:
    mutated = bytearray(data)
    limit = min(len(data), HEADER_BYTES) if rng.random() < 0.5 else len(data)
    for _ in range(int(rng.integers(1, 9))):
        mutated[int(rng.integers(limit))] = int(rng.integers(256))
    return bytes(mutated)


def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    # Mostly inside the first kilobytes (headers, tables), sometimes anywhere.
    end = int(rng.integers(1, min(len(data), 4096))) if rng.random() < 0.6 else int(rng.integers(1, len(data)))
    return data[:end]
