"""The torch-free imaging module on real files: decode by content, preprocess by the record."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcore.imaging import (
    ImageDecodeError,
    ImageTooLargeError,
    decode_image,
    load_model_input,
    preprocess_image,
    stack_batch,
)
from medcore.record import Preprocessing

GRAY = Preprocessing(height=28, width=28, channels=1, mean=(0.5,), std=(0.25,))
RGB = Preprocessing(height=32, width=32, channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_png_bytes_in_a_jpg_file_decode_by_content(shared_data: Path) -> None:
    data = (shared_data / "covid_chestxray_ieee8023_subset/images/000001-12.jpg").read_bytes()
    assert data.startswith(b"\x89PNG")
    image = decode_image(data)
    assert image.mode == "L"
    assert image.size == (373, 361)


@pytest.mark.parametrize(
    "name",
    [
        "covid_chestxray_ieee8023_subset/images/000001-17.jpg",  # RGBA PNG
        "covid_chestxray_ieee8023_subset/images/000001-2.jpg",  # RGB JPEG
        "kermany_chest_xray_subset/images/IM-0001-0001.jpeg",  # L JPEG
    ],
)
def test_real_files_become_model_input(shared_data: Path, name: str) -> None:
    data = (shared_data / name).read_bytes()
    gray = load_model_input(data, GRAY)
    assert gray.shape == (1, 28, 28)
    assert gray.dtype == np.float32
    assert np.isfinite(gray).all()
    # [0, 1] pixels standardised with mean 0.5, std 0.25 lie in [-2, 2].
    assert gray.min() >= -2.0 and gray.max() <= 2.0
    color = load_model_input(data, RGB)
    assert color.shape == (3, 32, 32)


def test_sixteen_bit_images_are_min_max_scaled() -> None:
    ramp = np.linspace(1000, 4000, 64 * 64).reshape(64, 64).astype(np.uint16)
    image = decode_image(encode(Image.fromarray(ramp), "PNG"))
    pixels = np.asarray(image)
    assert image.mode == "L"
    assert pixels.min() == 0 and pixels.max() == 255


def test_multi_page_tiff_reads_the_first_page() -> None:
    first = Image.fromarray(np.full((40, 40), 200, np.uint8))
    second = Image.fromarray(np.full((40, 40), 10, np.uint8))
    buffer = io.BytesIO()
    first.save(buffer, format="TIFF", save_all=True, append_images=[second])
    pixels = np.asarray(decode_image(buffer.getvalue()))
    assert (pixels == 200).all()


def test_array_and_file_paths_give_identical_input() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
    from_array = preprocess_image(array, GRAY)
    from_file = load_model_input(encode(Image.fromarray(array), "PNG"), GRAY)
    assert np.array_equal(from_array, from_file)
    expected = (array.astype(np.float32) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(from_array[0], expected, atol=1e-6)


def test_centre_square_crop_keeps_the_middle() -> None:
    wide = np.zeros((28, 84), np.uint8)
    wide[:, 28:56] = 255  # only the centre square is white
    out = preprocess_image(wide, GRAY)
    assert np.allclose(out, (1.0 - 0.5) / 0.25)


def test_empty_file() -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(b"")
    assert info.value.code == "empty_file"


@pytest.mark.parametrize("data", [b"patient report, not an image", b"GIF89a" + bytes(20)])
def test_not_an_image(data: bytes) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    assert info.value.code == "not_an_image"


def test_gif_is_not_accepted() -> None:
    data = encode(Image.new("L", (8, 8)), "GIF")
    with pytest.raises(ImageDecodeError, match="GIF is not accepted"):
        decode_image(data)


def test_truncated_file_is_corrupt(shared_data: Path) -> None:
    data = (shared_data / "kermany_chest_xray_subset/images/IM-0001-0001.jpeg").read_bytes()
    for truncated in (data[: len(data) // 3], encode(Image.new("L", (64, 64)), "PNG")[:60]):
        with pytest.raises(ImageDecodeError) as info:
            decode_image(truncated)
        assert info.value.code in {"corrupt_image", "not_an_image"}
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data[: len(data) // 3])
    assert info.value.code == "corrupt_image"


def test_pixel_limit_guards_against_decompression_bombs() -> None:
    data = encode(Image.new("L", (3000, 3000)), "PNG")
    with pytest.raises(ImageTooLargeError, match=r"9000000 pixels.*limit is 1000000"):
        decode_image(data, max_pixels=1_000_000)
    assert decode_image(data).size == (3000, 3000)


def test_stack_batch() -> None:
    batch = stack_batch([np.zeros((1, 4, 4), np.float32), np.ones((1, 4, 4), np.float32)])
    assert batch.shape == (2, 1, 4, 4) and batch.flags.c_contiguous
    with pytest.raises(ValueError, match="empty"):
        stack_batch([])


DICOM = "dicom_samples"


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("CR-MONO1-10-chest_MONOCHROME1_no_meta.dcm", (440, 440)),  # no preamble, no file meta
        ("RG1_J2KI_CR_chest_PA_MONOCHROME1_j2k.dcm", (1841, 1955)),  # JPEG 2000
        ("SIIM_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819_CR_chest_MONOCHROME2_jpeg.dcm", (1024, 1024)),
    ],
)
def test_real_dicom_radiographs_decode(shared_data: Path, name: str, size: tuple[int, int]) -> None:
    data = (shared_data / DICOM / name).read_bytes()
    image = decode_image(data)
    assert image.mode == "L" and image.size == size
    pixels = np.asarray(image)
    assert pixels.min() == 0 and pixels.max() == 255
    assert load_model_input(data, GRAY).shape == (1, 28, 28)


def test_monochrome1_is_inverted(shared_data: Path) -> None:
    import pydicom

    path = shared_data / DICOM / "RG3_J2KR_CR_tibia_MONOCHROME1_j2k_lossless.dcm"
    as_stored = np.asarray(decode_image(path.read_bytes()), dtype=np.int16)
    dataset = pydicom.dcmread(path)
    dataset.PhotometricInterpretation = "MONOCHROME2"
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    as_monochrome2 = np.asarray(decode_image(buffer.getvalue()), dtype=np.int16)
    assert np.array_equal(as_stored, 255 - as_monochrome2)
    # Once inverted, air beside the leg (columns ~480-580) is dark and the tibia (~800-900) bright.
    assert as_stored[:, 480:580].mean() < 60 < 150 < as_stored[:, 800:900].mean()


def test_dicom_pixel_limit_is_checked_before_decoding(shared_data: Path) -> None:
    data = (shared_data / DICOM / "RG1_J2KI_CR_chest_PA_MONOCHROME1_j2k.dcm").read_bytes()
    with pytest.raises(ImageTooLargeError, match="limit is 1000000"):
        decode_image(data, max_pixels=1_000_000)


def test_dicom_without_pixels_is_rejected(shared_data: Path) -> None:
    import pydicom

    dataset = pydicom.dcmread(shared_data / DICOM / "pydicom_dicomdirtests_CR1_6154_16x16_MONOCHROME1.dcm")
    del dataset.PixelData
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    with pytest.raises(ImageDecodeError, match="no pixel data"):
        decode_image(buffer.getvalue())
