"""The per-request decode budget: what decoding an image would allocate, checked from its header first."""

from __future__ import annotations

from medcore.imaging.errors import ImageDecodeError, ImageTooLargeError

# 256 MiB: an 8192 x 8192 16-bit radiograph (128 MiB) or RGB photo (192 MiB) fits; a bomb does not.
DEFAULT_MAX_DECODE_BYTES = 256 * 1024 * 1024


def decoded_bytes(width: int, height: int, channels: int, bytes_per_sample: int, frames: int = 1) -> int:
    """width x height x channels x bytes per sample x frames; non-positive header values are corrupt."""
    values = {"width": width, "height": height, "channels": channels, "bytes per sample": bytes_per_sample}
    for name, value in {**values, "frames": frames}.items():
        if value <= 0:
            raise ImageDecodeError(f"image header gives {name} {value}", code="corrupt_image")
    return width * height * channels * bytes_per_sample * frames


def check_decode_budget(
    width: int, height: int, channels: int, bytes_per_sample: int, frames: int = 1, *, max_bytes: int
) -> int:
    """Raise `ImageTooLargeError` (decode_budget_exceeded) when decoding would need more than `max_bytes`."""
    needed = decoded_bytes(width, height, channels, bytes_per_sample, frames)
    if needed > max_bytes:
        shape = f"{width}x{height}, {channels} channel(s) of {bytes_per_sample} byte(s), {frames} frame(s)"
        raise ImageTooLargeError(
            f"decoding needs {needed} bytes ({shape}), the limit is {max_bytes}", code="decode_budget_exceeded"
        )
    return needed
