"""Turn what callers hold (paths, bytes, file objects, PIL images) into encoded bytes."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, Union

from PIL import Image

from shopvision.errors import InvalidImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp"})
"""File suffixes the CLI, the catalog and ``eval`` pick up when they scan folders."""
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM")
"""How JPEG, PNG, GIF, TIFF and BMP files start; WebP is ``RIFF....WEBP`` (:func:`looks_like_an_image`)."""

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO, Image.Image]
"""A file path, encoded image bytes, a binary file object, or a PIL image."""


def encode(image: ImageInput) -> bytes:
    """Encoded bytes to send as they are; PIL images are encoded losslessly as PNG.

    Decoding stays on the server, so bytes and files are not opened here.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        try:
            return Path(image).read_bytes()
        except OSError as error:
            raise InvalidImageError(f"cannot read {os.fspath(image)}: {error.strerror or error}") from error
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if hasattr(image, "read"):
        data = image.read()
        if not isinstance(data, bytes):
            raise InvalidImageError("file object returned text; open images in binary mode ('rb')")
        return data
    raise InvalidImageError(f"unsupported image type {type(image).__name__}; pass a path, bytes, a file or a PIL image")


def looks_like_an_image(data: bytes) -> bool:
    """Whether bytes start like one of the formats preprocessing decodes (JPEG, PNG, GIF, WebP, TIFF, BMP): a cheap
    refusal of an HTML error page or a text file before it costs a request to the model server."""
    return data.startswith(IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
