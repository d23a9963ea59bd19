"""JPEG decoding on the GPU with NVIDIA nvImageCodec (`nvidia-nvimgcodec-cu13`), and the choice of decoder.

`NvImageCodecDecoder` is a `PixelDecoder` (decode.py): it replaces only Pillow's decoding of the pixels of 8-bit
grayscale and RGB JPEGs (nvJPEG; nvImageCodec decodes PNG on the CPU, so PNGs stay Pillow's). Every rule stays
medcore's: the format sniffing, the size limits and budget, the errors, the draft-mode reduction (a box filter
by the scale Pillow's draft would use), the mode conversion, the crop, resize and normalisation. A file it fails
on, or an answer of the wrong size, is decoded on the host instead, so a corrupt file still gets the host's error.

Tolerance: the model input it leads to equals the host decoder's within `MAX_LEVELS` 8-bit levels per pixel
and `MEAN_LEVELS` on average (the IDCTs differ in rounding, and a box reduction is not libjpeg's DCT scaling;
measured on the CPU, full-size decode + box reduction against draft mode: at most 1 level, 0.13 on average).
bench/gpu_proof.sh checks it on a GPU (tests/test_gpu_decode.py).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from medcore.imaging.decode import PixelDecoder

logger = logging.getLogger(__name__)

DECODERS = ("auto", "host", "nvimgcodec")
MAX_LEVELS = 3.0  # largest |GPU - host| of one input value, in 8-bit levels (x std / 255 in input units)
MEAN_LEVELS = 0.5  # largest mean |GPU - host| over an input, in 8-bit levels


class NvImageCodecDecoder:
    """8-bit JPEG pixels decoded on CUDA device `device_id` (nvJPEG); one nvImageCodec decoder per thread.

    Made only where it can work: the constructor imports nvImageCodec and starts a decoder on the device, so a
    missing package, GPU or nvJPEG fails here (and the caller falls back to the host), not on a request."""

    formats = frozenset({"JPEG"})

    def __init__(self, device_id: int = 0, module: Any = None) -> None:
        self.codec = module if module is not None else importlib.import_module("nvidia.nvimgcodec")
        self.device_id = device_id
        spec = self.codec.ColorSpec
        self.params = {
            mode: self.codec.DecodeParams(color_spec=color, allow_any_depth=False, apply_exif_orientation=False)
            for mode, color in (("L", spec.GRAY), ("RGB", spec.RGB))
        }  # Pillow never applies the EXIF orientation either
        self._local = threading.local()
        self._decoder()

    def _decoder(self) -> Any:
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:
            kinds = self.codec.BackendKind
            # GPU backends only: a CPU decode here would just be a second host decoder.
            backends = [self.codec.Backend(backend_kind=kind) for kind in (kinds.HW_GPU_ONLY, kinds.GPU_ONLY)]
            # Fancy (smooth) chroma upsampling, as libjpeg (Pillow) does, for RGB output.
            decoder = self.codec.Decoder(device_id=self.device_id, backends=backends, options=":fancy_upsampling=1")
            self._local.decoder = decoder
        return decoder

    def __call__(self, data: bytes, mode: str) -> np.ndarray | None:
        try:
            source = self.codec.CodeStream(data) if hasattr(self.codec, "CodeStream") else data
            image = self._decoder().decode(source, params=self.params[mode])
            if image is None:
                return None
            array = np.asarray(image.cpu())
        except Exception as exc:  # nvImageCodec's own errors: the host decodes the file (and names any fault)
            logger.debug("nvImageCodec declined a file (%s); decoding it on the host", type(exc).__name__)
            return None
        if mode == "L" and array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        return np.ascontiguousarray(array)


def select_pixel_decoder(
    requested: str,
    *,
    on_gpu: bool,
    device_id: int = 0,
    factory: Callable[[int], PixelDecoder] = NvImageCodecDecoder,
) -> PixelDecoder | None:
    """The decoder for `requested` ("auto", "host" or "nvimgcodec"); None means the host decoder.

    "auto" tries nvImageCodec when the model runs on a GPU (`on_gpu`), "nvimgcodec" always; either falls back
    to the host decoder, with a log line, when nvImageCodec is not installed or cannot start on the device."""
    if requested not in DECODERS:
        raise ValueError(f"Invalid decoder {requested!r}. Only auto, host and nvimgcodec are supported.")
    if requested == "host" or (requested == "auto" and not on_gpu):
        return None
    try:
        decoder = factory(device_id)
    except ImportError:
        log = logger.warning if requested == "nvimgcodec" else logger.info
        log("decoder: nvImageCodec is not installed (pip install nvidia-nvimgcodec-cu13); decoding on the host")
        return None
    except Exception as exc:  # no GPU, no driver, no nvJPEG: whatever nvImageCodec raises
        logger.warning(
            "decoder: nvImageCodec could not start on CUDA device %d (%s: %s); decoding on the host",
            device_id, type(exc).__name__, exc,
        )  # fmt: skip
        return None
    logger.info("decoder: nvImageCodec on CUDA device %d for %s", device_id, ", ".join(sorted(decoder.formats)))
    return decoder
