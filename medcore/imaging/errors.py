"""Errors raised while reading an image: each carries a stable `code` and an HTTP-agnostic `status`.

The status is the category a caller maps to a response (the service uses it as the HTTP status):
400 the bytes are empty or corrupt, 413 the image would need more memory than allowed, 415 a format,
transfer syntax or pixel layout we do not read, 422 a readable image the model cannot use (wrong
channel count, outside the model's intended use). Messages name sizes, formats and tag names, never
file names, patient data or pixels.
"""

from __future__ import annotations

# Every code the imaging module raises, with its category. Stable: clients script against the codes.
STATUS_BY_CODE: dict[str, int] = {
    "invalid_image": 400,
    "empty_file": 400,
    "corrupt_image": 400,
    "image_too_large": 413,
    "decode_budget_exceeded": 413,
    "not_an_image": 415,
    "unsupported_transfer_syntax": 415,
    "unsupported_pixel_format": 415,
    "unusable_image": 422,
    "wrong_channel_count": 422,
    "channel_size": 422,
    "outside_intended_use": 422,
}
IMAGE_ERROR_STATUSES = frozenset(STATUS_BY_CODE.values())


class ImageError(ValueError):
    """Base class: the bytes could not become a model input. `status` follows from `code`."""

    code: str = "invalid_image"
    status: int = 400

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            if code not in STATUS_BY_CODE:
                raise ValueError(f"unknown image error code {code!r}; known: {', '.join(sorted(STATUS_BY_CODE))}")
            self.code = code
        self.status = STATUS_BY_CODE.get(self.code, type(self).status)


class ImageDecodeError(ImageError):
    """Empty, truncated or corrupt data (400), or, by its code, a format we do not read (415)."""

    code = "not_an_image"

    def __init__(self, message: str, code: str = "not_an_image") -> None:
        super().__init__(message, code)


class UnsupportedImageError(ImageDecodeError):
    """A format, DICOM transfer syntax or pixel layout this module does not decode (415)."""

    status = 415


class UnusableImageError(ImageDecodeError):
    """A readable image the model cannot use: wrong channel count, channel sizes differ (422)."""

    code = "unusable_image"
    status = 422

    def __init__(self, message: str, code: str = "unusable_image") -> None:
        super().__init__(message, code)


class OutsideIntendedUseError(UnusableImageError):
    """The DICOM attributes say the image is outside the model's intended use (422)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "outside_intended_use")


class ImageTooLargeError(ImageError):
    """More pixels, or more decoded bytes, than the configured limits (decompression-bomb guard, 413)."""

    code = "image_too_large"
    status = 413

    def __init__(self, message: str, code: str = "image_too_large") -> None:
        super().__init__(message, code)
