"""Errors raised while reading an image; each carries a stable machine-readable code."""


class ImageError(ValueError):
    """Base class: the bytes could not become a model input."""

    code = "invalid_image"


class ImageDecodeError(ImageError):
    """Empty, truncated, or not an image format we read."""

    def __init__(self, message: str, code: str = "not_an_image") -> None:
        super().__init__(message)
        self.code = code


class ImageTooLargeError(ImageError):
    """More pixels than the configured limit (decompression-bomb guard)."""

    code = "image_too_large"

