"""Render a model's heatmaps over the image it saw: the `explanation` part of a predict answer.

The model's `heatmaps` output holds, per label, a small map [h, w] whose spatial mean is that label's
logit. Each map is min-max scaled to [0, 1] on its own (a flat map renders as all zero), resized
bilinearly onto the region the model saw (the centre square crop, or the whole image without crop),
colour-mapped with a perceptual blue-green-yellow-red ramp, and given an alpha that rises with the
value; outside that region the overlay is transparent. The base image is the decoded 8-bit image,
long side scaled to at most `DISPLAY_MAX_SIDE`. Everything is numpy and Pillow: no matplotlib.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from medcore.imaging import DEFAULT_MAX_DECODE_BYTES, crop_box, decode_image
from medcore.imaging.decode import DRAFT_OVERSAMPLE
from medcore.record import Preprocessing

DISPLAY_MAX_SIDE = 512
# Anchor colours (value 0 .. 1) of the ramp, interpolated to a 256-entry table.
_ANCHORS = np.array(
    [
        [48, 18, 59],
        [70, 107, 227],
        [40, 187, 236],
        [49, 241, 131],
        [164, 252, 60],
        [237, 208, 58],
        [251, 128, 34],
        [205, 38, 6],
        [122, 4, 3],
    ],
    dtype=np.float64,
)
COLOUR_MAP = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)], axis=1
).astype(np.uint8)
ALPHA_MIN, ALPHA_MAX = 60, 190


def display_image(data: bytes, *, max_pixels: int, max_bytes: int) -> Image.Image:
    """The decoded 8-bit image (grayscale or RGB as stored), long side scaled to <= DISPLAY_MAX_SIDE."""
    min_side = DISPLAY_MAX_SIDE // DRAFT_OVERSAMPLE
    image = decode_image(data, mode="RGB", max_pixels=max_pixels, min_side=min_side, max_bytes=max_bytes)
    scale = min(1.0, DISPLAY_MAX_SIDE / max(image.size))
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, resample=Image.Resampling.BILINEAR)
    return image


def colour_map(heatmap: np.ndarray, width: int, height: int, region: tuple[int, int, int, int]) -> np.ndarray:
    """One [h, w] map -> RGBA uint8 [height, width, 4], coloured inside `region`, transparent outside."""
    values = np.asarray(heatmap, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    left, top, right, bottom = region
    size = (max(1, right - left), max(1, bottom - top))
    resized = np.asarray(Image.fromarray(scaled, mode="F").resize(size, resample=Image.Resampling.BILINEAR))
    index = np.clip(np.rint(resized * 255), 0, 255).astype(np.uint8)
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    patch = rgba[top : top + size[1], left : left + size[0]]
    patch[..., :3] = COLOUR_MAP[index][: patch.shape[0], : patch.shape[1]]
    alpha = ALPHA_MIN + (ALPHA_MAX - ALPHA_MIN) * index[: patch.shape[0], : patch.shape[1]].astype(np.float32) / 255
    patch[..., 3] = alpha.astype(np.uint8)
    return rgba


def render_explanation(
    data: bytes,
    heatmaps: np.ndarray,
    labels: Sequence[str],
    recipe: Preprocessing,
    *,
    max_pixels: int,
    max_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> dict[str, object]:
    """The contract's `explanation`: {"width", "height", "image_png", "heatmaps": [{"label", "png"}]}."""
    if heatmaps.ndim != 3 or len(heatmaps) != len(labels):
        raise ValueError(f"expected heatmaps [{len(labels)}, h, w], got {list(heatmaps.shape)}")
    image = display_image(data, max_pixels=max_pixels, max_bytes=max_bytes)
    region = crop_box(image.size, recipe)
    overlays = [
        {"label": label, "png": _png(Image.fromarray(colour_map(m, image.width, image.height, region), mode="RGBA"))}
        for label, m in zip(labels, heatmaps, strict=True)
    ]
    base = image if image.mode == "RGB" and not _is_gray(image) else image.convert("L")
    return {"width": image.width, "height": image.height, "image_png": _png(base), "heatmaps": overlays}


def _is_gray(image: Image.Image) -> bool:
    pixels = np.asarray(image)
    return bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
