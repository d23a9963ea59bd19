"""The GPU decoder (nvImageCodec) behind SERVE_DECODER: its selection and fallback, the medcore hook it plugs into,
and (on a GPU only) its equality with the host decoder within the stated tolerance.

No GPU here: the hook is driven by a stand-in accelerator that decodes with Pillow at full size (what a GPU
decoder returns), and the real nvImageCodec test skips; bench/gpu_proof.sh runs this file on a GPU."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from service_support import kermany_images, tiny_model

from medcore.imaging import ImageDecodeError, load_model_input
from medcore.imaging.decode import _draft, draft_scale
from medcore.imaging.gpu_decode import MAX_LEVELS, MEAN_LEVELS, NvImageCodecDecoder, select_pixel_decoder
from medcore.record import Preprocessing
from service.config import Settings
from service.registry import build_registry

RECIPE = Preprocessing(height=224, width=224, channels=1, mean=(0.5,), std=(0.25,))
RGB_RECIPE = Preprocessing(height=224, width=224, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)


def jpeg(size: tuple[int, int], mode: str = "L", quality: int = 90) -> bytes:
    """A radiograph (a real Kermany JPEG) resized to `size` and saved as an 8-bit `mode` JPEG."""
    source = Image.open(kermany_images(1)[0]).convert("L").resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    source.convert(mode).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def levels(a: np.ndarray, b: np.ndarray, recipe: Preprocessing) -> tuple[float, float]:
    """(max, mean) |a - b| of two model inputs in 8-bit levels (undoing the normalisation)."""
    std = np.asarray(recipe.std, dtype=np.float32)[:, None, None]
    diff = np.abs(a - b) * std * 255.0
    return float(diff.max()), float(diff.mean())


class FullSizeDecoder:
    """Stand-in for a GPU decoder: Pillow at full size (no draft mode), as nvImageCodec returns a file."""

    formats = frozenset({"JPEG", "PNG"})

    def __init__(self, answer: Callable[[np.ndarray], np.ndarray | None] = lambda pixels: pixels) -> None:
        self.calls: list[str] = []
        self.answer = answer

    def __call__(self, data: bytes, mode: str) -> np.ndarray | None:
        self.calls.append(mode)
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except Exception:
            return None  # as the real one: a file it cannot decode goes to the host
        return self.answer(np.asarray(image.convert(mode)))


@pytest.mark.parametrize("size", [(2048, 2048), (1857, 1317), (5000, 900), (300, 300), (224, 224), (900, 5000)])
def test_draft_scale_is_the_scale_pillow_decodes_at(size: tuple[int, int]) -> None:
    image = Image.open(io.BytesIO(jpeg(size)))
    _draft(image, "L", 224)
    scale = draft_scale(size, 224)
    assert image.size == ((size[0] + scale - 1) // scale, (size[1] + scale - 1) // scale)


@pytest.mark.parametrize(("mode", "recipe"), [("L", RECIPE), ("RGB", RECIPE), ("RGB", RGB_RECIPE), ("L", RGB_RECIPE)])
def test_accelerated_pixels_give_the_host_input_within_tolerance(mode: str, recipe: Preprocessing) -> None:
    data = jpeg((2048, 2048), mode)
    stand_in = FullSizeDecoder()
    accelerated = load_model_input(data, recipe, pixels=stand_in)
    host = load_model_input(data, recipe)
    assert stand_in.calls == ["L" if "L" in (mode, "L" if recipe.channels == 1 else "RGB") else "RGB"]
    worst, mean = levels(accelerated, host, recipe)
    assert accelerated.shape == host.shape and accelerated.dtype == np.float32
    assert worst <= MAX_LEVELS and mean <= MEAN_LEVELS, (worst, mean)


def test_a_declined_or_misshapen_answer_is_decoded_on_the_host() -> None:
    data = jpeg((1024, 768))
    host = load_model_input(data, RECIPE)
    for answer in (lambda pixels: None, lambda pixels: pixels[:-1], lambda pixels: pixels.astype(np.uint16)):
        stand_in = FullSizeDecoder(answer)
        np.testing.assert_array_equal(load_model_input(data, RECIPE, pixels=stand_in), host)
        assert stand_in.calls == ["L"]
    with pytest.raises(ImageDecodeError) as caught:  # a corrupt JPEG still gets the host decoder's error
        load_model_input(data[: len(data) // 2], RECIPE, pixels=FullSizeDecoder())
    assert caught.value.code == "corrupt_image"


def test_other_formats_never_reach_the_accelerator() -> None:
    stand_in = FullSizeDecoder()
    for fmt, mode in (("TIFF", "L"), ("BMP", "L"), ("PNG", "I;16")):
        buffer = io.BytesIO()
        pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
        image = Image.fromarray(pixels if mode == "I;16" else (pixels % 256).astype(np.uint8))
        image.save(buffer, fmt)
        load_model_input(buffer.getvalue(), RECIPE, pixels=stand_in)
    assert stand_in.calls == []  # TIFF and BMP are not its formats; a 16-bit PNG is min-max scaled by the host


def test_selection_and_fallback(caplog: pytest.LogCaptureFixture) -> None:
    def broken(device_id: int) -> FullSizeDecoder:
        raise RuntimeError(f"no CUDA device {device_id}")

    def absent(device_id: int) -> FullSizeDecoder:
        raise ImportError("No module named 'nvidia.nvimgcodec'")

    def working(device_id: int) -> FullSizeDecoder:
        return FullSizeDecoder()

    caplog.set_level(logging.INFO, logger="medcore.imaging.gpu_decode")
    assert select_pixel_decoder("host", on_gpu=True, factory=working) is None
    assert select_pixel_decoder("auto", on_gpu=False, factory=broken) is None  # CPU model: not even tried
    assert not caplog.records
    assert isinstance(select_pixel_decoder("auto", on_gpu=True, factory=working), FullSizeDecoder)
    assert select_pixel_decoder("nvimgcodec", on_gpu=True, device_id=1, factory=broken) is None
    assert select_pixel_decoder("auto", on_gpu=True, factory=absent) is None
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages[0] == ("INFO", "decoder: nvImageCodec on CUDA device 0 for JPEG, PNG")
    assert (
        messages[1][0] == "WARNING"
        and "could not start on CUDA device 1 (RuntimeError: no CUDA device 1)" in (messages[1][1])
    )
    assert messages[2] == (
        "INFO",
        "decoder: nvImageCodec is not installed (pip install nvidia-nvimgcodec-cu13); decoding on the host",
    )
    with pytest.raises(ValueError, match="Invalid decoder 'gpu'"):
        select_pixel_decoder("gpu", on_gpu=True)


def test_the_service_falls_back_to_the_host_decoder(caplog: pytest.LogCaptureFixture) -> None:
    """SERVE_DECODER=nvimgcodec without nvImageCodec (or a GPU) here: the real factory fails, the service serves."""
    caplog.set_level(logging.INFO, logger="medcore.imaging.gpu_decode")
    registry = build_registry(Settings(model_path=tiny_model(), decoder="nvimgcodec"))
    try:
        assert registry.default.pixels is None
        assert any(r.levelname == "WARNING" and "decoding on the host" in r.getMessage() for r in caplog.records)
        assert registry.default.decode(jpeg((256, 256))).shape == (1, 28, 28)
    finally:
        registry.decoder.shutdown()  # never started: no batcher thread to stop
    registry = build_registry(Settings(model_path=tiny_model()))
    assert registry.default.pixels is None  # auto with the model on the CPU: the host decoder
    registry.decoder.shutdown()


def nvimgcodec_or_skip() -> NvImageCodecDecoder:
    try:
        return NvImageCodecDecoder(0)
    except ImportError:
        pytest.skip("nvImageCodec is not installed (nvidia-nvimgcodec-cu13); bench/gpu_proof.sh runs this on a GPU")
    except Exception as exc:
        pytest.skip(f"nvImageCodec cannot start on CUDA device 0 ({type(exc).__name__}: {exc})")


def test_nvimgcodec_equals_the_host_decoder_within_tolerance(tmp_path: Path) -> None:
    """On a GPU: the model input through nvImageCodec equals the host's within MAX_LEVELS / MEAN_LEVELS."""
    decoder = nvimgcodec_or_skip()
    cases = [(jpeg((2048, 2048), mode), recipe) for mode in ("L", "RGB") for recipe in (RECIPE, RGB_RECIPE)]
    cases += [(path.read_bytes(), RECIPE) for path in kermany_images(8)]
    counted = Counted(decoder)
    for data, recipe in cases:
        counted.answers.clear()
        gpu = load_model_input(data, recipe, pixels=counted)
        assert counted.answers == [True], "nvImageCodec declined a baseline JPEG"
        worst, mean = levels(gpu, load_model_input(data, recipe), recipe)
        assert worst <= MAX_LEVELS and mean <= MEAN_LEVELS, (worst, mean)


class Counted:
    """A pixel decoder that records whether each call was answered."""

    def __init__(self, inner: NvImageCodecDecoder) -> None:
        self.inner, self.formats, self.answers = inner, inner.formats, list[bool]()

    def __call__(self, data: bytes, mode: str) -> np.ndarray | None:
        answer = self.inner(data, mode)
        self.answers.append(answer is not None)
        return answer


def test_nvimgcodec_adapter_against_a_stand_in_module() -> None:
    """The adapter's own code (parameters, one decoder per thread, gray squeeze, failures declined) on a stand-in
    for the nvidia.nvimgcodec module, which needs a GPU."""
    made: list[dict[str, object]] = []

    class Image_:
        def __init__(self, pixels: np.ndarray) -> None:
            self.pixels = pixels

        def cpu(self) -> np.ndarray:
            return self.pixels

    class FakeDecoder:
        def __init__(self, **kwargs: object) -> None:
            made.append(kwargs)

        def decode(self, data: bytes, params: dict[str, object]) -> Image_ | None:
            if data == b"bad":
                raise RuntimeError("nvjpeg failure")
            if data == b"none":
                return None
            channels = 1 if params["color_spec"] == "GRAY" else 3
            return Image_(np.full((4, 5, channels), 7, dtype=np.uint8))

    class Module:
        ColorSpec = type("ColorSpec", (), {"GRAY": "GRAY", "RGB": "RGB"})
        BackendKind = type("BackendKind", (), {"HW_GPU_ONLY": "hw", "GPU_ONLY": "gpu"})

        @staticmethod
        def DecodeParams(**kwargs: object) -> dict[str, object]:
            return kwargs

        @staticmethod
        def Backend(backend_kind: str) -> str:
            return backend_kind

        Decoder = FakeDecoder

    adapter = NvImageCodecDecoder(device_id=2, module=Module)
    assert made == [{"device_id": 2, "backends": ["hw", "gpu"], "options": ":fancy_upsampling=1"}]
    assert adapter.params["L"]["apply_exif_orientation"] is False
    assert adapter(b"ok", "L").shape == (4, 5) and adapter(b"ok", "RGB").shape == (4, 5, 3)
    assert adapter(b"bad", "L") is None and adapter(b"none", "L") is None
    thread = threading.Thread(target=adapter, args=(b"ok", "L"))
    thread.start()
    thread.join()
    assert len(made) == 2  # the other thread made its own decoder
