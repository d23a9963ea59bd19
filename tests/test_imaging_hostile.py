"""The decoder boundary under hostile input: named regressions, error categories, the decode budget,
every DICOM transfer syntax pydicom ships a sample of, the intended-use gate and bounded memory."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.data
import pytest
from data_location import DATA
from imaging_bombs import (
    base_dataset,
    deflated_copy,
    deflated_dicom,
    dicom_bytes,
    many_page_tiff,
    multi_frame_dicom,
    png16_ramp,
    png_with_size,
)
from PIL import Image

from medcore.imaging import (
    STATUS_BY_CODE,
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    OutsideIntendedUseError,
    UnsupportedImageError,
    UnusableImageError,
    check_intended_use,
    crop_box,
    decode_image,
    load_model_input,
    scale_to_uint8,
)
from medcore.record import IntendedUse, Preprocessing

GRAY = Preprocessing(height=28, width=28, channels=1, mean=(0.5,), std=(0.25,))
DICOM = "dicom_samples"
CHEST_CR = IntendedUse(modalities=("CR", "DX", "DR"), body_parts=("CHEST",), view_positions=("PA", "AP"))
REPO = Path(__file__).resolve().parents[1]


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def raises(data: bytes, code: str, **kwargs: object) -> ImageError:
    with pytest.raises(ImageError) as info:
        decode_image(data, **kwargs)  # type: ignore[arg-type]
    assert info.value.code == code, str(info.value)
    assert info.value.status == STATUS_BY_CODE[code]
    return info.value


# --- error categories -------------------------------------------------------------------------------


def test_each_error_class_carries_its_status() -> None:
    assert ImageDecodeError("x", code="corrupt_image").status == 400
    assert ImageDecodeError("x", code="empty_file").status == 400
    assert ImageDecodeError("x").status == 415  # the historical default code, not_an_image
    assert UnsupportedImageError("x", code="unsupported_transfer_syntax").status == 415
    assert ImageTooLargeError("x").status == 413 and ImageTooLargeError("x").code == "image_too_large"
    assert UnusableImageError("x", code="wrong_channel_count").status == 422
    assert OutsideIntendedUseError("x").code == "outside_intended_use"
    assert ImageError("parity image: x").status == 400  # message-only construction still works
    assert set(STATUS_BY_CODE.values()) == {400, 413, 415, 422}
    with pytest.raises(ValueError, match="unknown image error code 'nope'"):
        ImageDecodeError("x", code="nope")


# --- named regressions (each used to escape as a bare exception: a 500 in the service) ----------------


@pytest.mark.parametrize("length", [150, 200, 250, 300])
def test_jpeg_cut_inside_its_header(shared_data: Path, length: int) -> None:
    data = (shared_data / "kermany_chest_xray_subset/images/IM-0001-0001.jpeg").read_bytes()
    raises(data[:length], "corrupt_image")


def test_sixteen_byte_png_and_eighteen_byte_bmp(shared_data: Path) -> None:
    png = (shared_data / "covid_chestxray_ieee8023_subset/images/000001-12.jpg").read_bytes()
    raises(png[:16], "corrupt_image")
    raises(encode(Image.new("L", (8, 8)), "BMP")[:18], "corrupt_image")


def test_dicom_window_width_that_is_not_a_number(shared_data: Path) -> None:
    dataset = base_dataset(shared_data)
    dataset.WindowWidth = "12345678"
    data = dicom_bytes(dataset).replace(b"12345678", b"abcdefgh")
    error = raises(data, "corrupt_image")
    assert "WindowWidth is not a number" in str(error) and "abcdefgh" not in str(error)


def test_non_finite_float_tiff_is_corrupt() -> None:
    pixels = np.ones((8, 8), np.float32)
    pixels[3, 3] = np.nan
    raises(encode(Image.fromarray(pixels, mode="F"), "TIFF"), "corrupt_image")


def test_dicom_element_with_an_unknown_vr(shared_data: Path) -> None:
    data = (shared_data / DICOM / "pydicom_dicomdirtests_CR1_6154_16x16_MONOCHROME1.dcm").read_bytes()
    samples_per_pixel = b"\x28\x00\x02\x00US"
    assert samples_per_pixel in data
    raises(data.replace(samples_per_pixel, b"\x28\x00\x02\x00\x55\xdb"), "corrupt_image")  # found by the fuzz


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_high_bit_depth_tiff_modes_are_scaled(mode: str) -> None:
    ramp = np.arange(64 * 64).reshape(64, 64) * 10
    dtype = {"I;16": "<u2", "I;16B": ">u2", "I": "<i4"}[mode]
    data = encode(Image.frombytes(mode, (64, 64), ramp.astype(dtype).tobytes()), "TIFF")
    pixels = np.asarray(decode_image(data))
    assert pixels[0, 0] == 0 and pixels[-1, -1] == 255
    assert np.array_equal(pixels, scale_to_uint8(ramp))


def test_dicom_transfer_syntax_without_decoder_is_415(shared_data: Path) -> None:
    dataset = base_dataset(shared_data)
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.UID("1.2.840.10008.1.2.4.100")  # MPEG2: no decoder installed
    dataset.PixelData = pydicom.encaps.encapsulate([bytes(16)])
    dataset["PixelData"].is_undefined_length = True
    raises(dicom_bytes(dataset), "unsupported_transfer_syntax")


# --- the decode budget, from headers, before decoding -------------------------------------------------


def test_png_dimension_bombs() -> None:
    raises(png_with_size(60_000, 60_000, 16), "image_too_large")  # over the pixel limit
    error = raises(png_with_size(12_000, 12_000, 16), "decode_budget_exceeded", max_pixels=10**9)
    assert "288000000 bytes" in str(error) and "limit is 268435456" in str(error)
    raises(png_with_size(4096, 4096, 16), "decode_budget_exceeded", max_bytes=16 * 2**20)


def test_multi_frame_dicom_counts_every_frame_and_decodes_the_first(shared_data: Path) -> None:
    error = raises(multi_frame_dicom(shared_data, 512, 512, frames=2000), "decode_budget_exceeded")
    assert "2000 frame(s)" in str(error)
    data = multi_frame_dicom(shared_data, 64, 64, frames=3, pixel_frames=3)
    single = multi_frame_dicom(shared_data, 64, 64, frames=1, pixel_frames=1)  # the same first frame alone
    assert np.array_equal(np.asarray(decode_image(data)), np.asarray(decode_image(single)))
    raises(data, "decode_budget_exceeded", max_bytes=64 * 64 * 2 * 2)


def test_deflate_dicom_decodes_and_is_bounded(shared_data: Path) -> None:
    plain = np.asarray(
        decode_image((shared_data / DICOM / "pydicom_dicomdirtests_CR1_6154_16x16_MONOCHROME1.dcm").read_bytes())
    )
    assert np.array_equal(np.asarray(decode_image(deflated_copy(shared_data))), plain)
    # The header asks for 1.3 GB: refused after inflating only the header allowance.
    raises(deflated_dicom(shared_data, 8192, 8192, 10, pixel_bytes=8 << 20), "decode_budget_exceeded")
    # The header lies (16x16) and the stream inflates to 64 MiB: inflation stops at the header's size + allowance.
    error = raises(deflated_dicom(shared_data, 16, 16, 1, pixel_bytes=64 << 20), "decode_budget_exceeded")
    assert "inflates to more than" in str(error)
    raises(deflated_copy(shared_data)[:-40], "corrupt_image")


def test_many_page_tiff_is_refused_by_its_pages() -> None:
    error = raises(many_page_tiff(300, 512), "decode_budget_exceeded", max_bytes=32 << 20)
    assert "first 129 pages" in str(error)
    assert decode_image(many_page_tiff(3, 64)).size == (64, 64)


def test_bombs_are_refused_in_bounded_memory(shared_data: Path, tmp_path: Path) -> None:
    """In a fresh process: every bomb is refused, and peak RSS stays under 200 MiB (interpreter + libraries ~90)."""
    bombs = {
        "png": png_with_size(12_000, 12_000, 16),
        "multi_frame": multi_frame_dicom(shared_data, 1024, 1024, frames=5000),
        "deflate_header": deflated_dicom(shared_data, 8192, 8192, 10, pixel_bytes=8 << 20),
        "deflate_lying": deflated_dicom(shared_data, 16, 16, 1, pixel_bytes=64 << 20),
        "tiff": many_page_tiff(2000, 512),
    }
    for name, data in bombs.items():
        (tmp_path / name).write_bytes(data)
    report = _run_measured(tmp_path, list(bombs), "max_pixels=12_000 * 12_000")
    assert report["codes"] == ["decode_budget_exceeded"] * len(bombs), report
    assert float(report["peak_mib"]) < 200, report


def test_sixteen_bit_8192_png_decodes_without_float64_copies(tmp_path: Path) -> None:
    """Was ~1.8 GB peak (float64 copies); the 128 MiB image plus its 64 MiB 8-bit result now fit in 400 MiB."""
    (tmp_path / "ramp").write_bytes(png16_ramp(8192))
    report = _run_measured(tmp_path, ["ramp"], "")
    assert report["codes"] == ["decoded (8192, 8192) L"], report
    assert float(report["peak_mib"]) < 400, report


def _run_measured(folder: Path, names: list[str], kwargs: str) -> dict[str, Any]:
    script = f"""
import json
from pathlib import Path
from medcore.imaging import ImageError, decode_image
codes = []
for name in {names!r}:
    try:
        image = decode_image(Path({str(folder)!r}, name).read_bytes(), {kwargs})
        codes.append(f"decoded {{image.size}} {{image.mode}}")
    except ImageError as exc:
        codes.append(exc.code)
# VmHWM is this process's own peak (ru_maxrss would carry the forking parent's peak across exec).
peak_kib = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
print(json.dumps({{"codes": codes, "peak_mib": peak_kib / 1024}}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


# --- one min-max scaling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.int32, np.float32])
def test_scaling_equals_the_float64_formula(dtype: type) -> None:
    rng = np.random.default_rng(0)
    values: np.ndarray = rng.integers(-300 if dtype != np.uint16 else 0, 3000, size=(300, 257)).astype(dtype)
    as_float = values.astype(np.float64)
    expected = np.rint((as_float - as_float.min()) * (255.0 / (as_float.max() - as_float.min()))).astype(np.uint8)
    assert np.array_equal(scale_to_uint8(values), expected)
    window = lambda v: np.clip(v * 0.5 + 10, 0, 900)  # noqa: E731 - an elementwise LUT, as DICOM's VOI
    mapped = window(as_float)
    expected = np.rint((mapped - mapped.min()) * (255.0 / (mapped.max() - mapped.min()))).astype(np.uint8)
    assert np.array_equal(scale_to_uint8(values, window), expected)
    assert not scale_to_uint8(np.full((4, 4), 7, dtype)).any()


# --- every transfer syntax pydicom ships a sample of, and the real DICOMs ----------------------------------

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
SYNTAX_SAMPLES = {
    "Implicit VR Little Endian": "MR_small_implicit.dcm",
    "Explicit VR Little Endian": "MR_small.dcm",
    "Explicit VR Big Endian": "MR_small_bigendian.dcm",
    "Deflated Explicit VR Little Endian": "image_dfl.dcm",
    "JPEG Baseline (Process 1)": "SC_rgb_jpeg_dcmtk.dcm",
    "JPEG Extended (Process 2 and 4)": "JPGExtended.dcm",
    "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])": "SC_rgb_jpeg_gdcm.dcm",
    "JPEG-LS Lossless Image Compression": "MR_small_jpeg_ls_lossless.dcm",
    "JPEG-LS Lossy (Near-Lossless) Image Compression": "JPEGLSNearLossless_16.dcm",
    "JPEG 2000 Image Compression (Lossless Only)": "MR_small_jp2klossless.dcm",
    "JPEG 2000 Image Compression": "JPEG2000.dcm",
    "RLE Lossless": "MR_small_RLE.dcm",
}


@pytest.mark.parametrize(("syntax", "name"), SYNTAX_SAMPLES.items())
def test_pydicom_sample_of_each_transfer_syntax_decodes(syntax: str, name: str) -> None:
    path = TEST_FILES / name
    if not path.is_file():
        pytest.skip(f"{name} is not in this pydicom wheel (nothing is downloaded)")
    dataset = pydicom.dcmread(path)
    assert dataset.file_meta.TransferSyntaxUID.name == syntax
    image = decode_image(path.read_bytes(), mode="RGB")
    assert image.size == (dataset.Columns, dataset.Rows)
    if syntax != "Deflated Explicit VR Little Endian":  # compare with pydicom's own decode of the first frame
        reference = pydicom.pixels.pixel_array(dataset, index=0)
        gray = np.asarray(decode_image(path.read_bytes()))
        if reference.ndim == 2:
            assert np.corrcoef(gray.ravel().astype(float), reference.ravel().astype(float))[0, 1] ** 2 > 0.95


def test_multi_frame_rle_sample_gives_its_first_frame() -> None:
    path = TEST_FILES / "SC_rgb_rle_2frame.dcm"
    if not path.is_file():
        pytest.skip("SC_rgb_rle_2frame.dcm is not in this pydicom wheel")
    first = pydicom.pixels.pixel_array(pydicom.dcmread(path), index=0)
    decoded = np.asarray(decode_image(path.read_bytes(), mode="RGB"))
    assert np.array_equal(decoded, scale_to_uint8(first))


@pytest.mark.parametrize("path", sorted((DATA / DICOM).glob("*.dcm")), ids=lambda p: p.name[:24])
def test_every_real_dicom_decodes(path: Path) -> None:
    image = decode_image(path.read_bytes())
    dataset = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    assert image.size == (dataset.Columns, dataset.Rows)


# --- intended use ---------------------------------------------------------------------------------------------


def test_intended_use_gate(shared_data: Path) -> None:
    chest = (shared_data / DICOM / "RG1_J2KI_CR_chest_PA_MONOCHROME1_j2k.dcm").read_bytes()
    tibia = (shared_data / DICOM / "RG3_J2KR_CR_tibia_MONOCHROME1_j2k_lossless.dcm").read_bytes()
    png = (shared_data / "covid_chestxray_ieee8023_subset/images/000001-12.jpg").read_bytes()
    check_intended_use(chest, CHEST_CR)
    check_intended_use(png, CHEST_CR)  # no tags: passes
    check_intended_use(tibia, IntendedUse())  # unrestricted
    with pytest.raises(OutsideIntendedUseError, match="BodyPartExamined EXTREMITY is outside") as info:
        check_intended_use(tibia, CHEST_CR)
    assert info.value.status == 422 and info.value.code == "outside_intended_use"
    with pytest.raises(OutsideIntendedUseError):
        load_model_input(tibia, GRAY, intended_use=CHEST_CR)
    assert load_model_input(png, GRAY, intended_use=CHEST_CR).shape == (1, 28, 28)


def test_intended_use_never_quotes_free_text(shared_data: Path) -> None:
    dataset = base_dataset(shared_data)
    dataset.BodyPartExamined = "DOE^JANE"
    dataset.PatientName = "DOE^JANE"
    with pytest.raises(OutsideIntendedUseError) as info:
        check_intended_use(dicom_bytes(dataset), IntendedUse(body_parts=("CHEST",)))
    assert "DOE" not in str(info.value) and "BodyPartExamined" in str(info.value)
    del dataset.BodyPartExamined
    with pytest.raises(OutsideIntendedUseError, match="BodyPartExamined is absent"):
        check_intended_use(dataset, IntendedUse(body_parts=("CHEST",)))


def test_crop_box_is_the_region_the_model_sees() -> None:
    assert crop_box((100, 60), GRAY) == (20, 0, 80, 60)
    assert crop_box((60, 100), GRAY) == (0, 20, 60, 80)
    no_crop = GRAY.model_copy(update={"crop": "none"})
    assert crop_box((100, 60), no_crop) == (0, 0, 100, 60)
