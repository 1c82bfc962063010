"""ResNet evaluation preprocessing: encoded bytes -> normalised CHW float32.

Used by the ``preprocess`` Triton model and by the in-process benchmark baselines, so both
run exactly the same code. The recipe is torchvision's ``Resize(256)`` + ``CenterCrop(224)``
+ ``Normalize`` with bilinear filtering, after EXIF orientation and conversion to RGB with
transparent pixels composited onto white.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shopvision.contract import (
    CROP_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    RESIZE_SHORTER_SIDE,
)
from shopvision.errors import ShopvisionError

SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")
_TRANSPARENT_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_EXIF_ORIENTATION = 0x0112
BAND_PIXELS = 1 << 20
"""Transparent and 16-bit images are converted a band of rows at a time, about this many pixels per band, so the
working copies (RGBA, white and the blend; or float32) cost a few MB, not 4 to 12 bytes per pixel of the image."""


class ImageRejected(ShopvisionError, ValueError):
    """The bytes are not an image this pipeline accepts; the message says why."""


@dataclass(frozen=True, kw_only=True)
class DecodeLimits:
    """Upper bounds checked before any pixel is decoded."""

    max_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS


EXACT_RESIZE_MAX_ASPECT = 16
"""Up to this aspect ratio the whole image is resized, then centre-cropped: the evaluation recipe, pixel for pixel
(a real network's top-5 shifts with one 8-bit level of difference, `benchmarks/results/real-weights`). Past it the
resized image would be a needless intermediate (a 10000x10 image: 256000x256), so only the region the crop keeps is
resized (Pillow's ``resize(box=...)``), within one 8-bit level of the recipe."""


@dataclass(frozen=True)
class CropBox:
    """The torchvision recipe's geometry: the shorter side resized to 256, then a centre crop of 224."""

    resized_width: int
    resized_height: int
    left: int
    """Where the crop starts in the resized image."""
    top: int

    @classmethod
    def for_size(cls, width: int, height: int) -> CropBox:
        # Mirrors torchvision: shorter side -> 256 (long side truncated), then a centre crop whose offset is rounded.
        if width <= height:
            resized_w, resized_h = RESIZE_SHORTER_SIDE, int(RESIZE_SHORTER_SIDE * height / width)
        else:
            resized_w, resized_h = int(RESIZE_SHORTER_SIDE * width / height), RESIZE_SHORTER_SIDE
        return cls(resized_w, resized_h, int(round((resized_w - CROP_SIZE) / 2.0)),
                   int(round((resized_h - CROP_SIZE) / 2.0)))

    @property
    def crop(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.left + CROP_SIZE, self.top + CROP_SIZE

    def in_source(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The crop mapped back onto the source pixels."""
        scale_x, scale_y = width / self.resized_width, height / self.resized_height
        left, top, right, bottom = self.crop
        return left * scale_x, top * scale_y, right * scale_x, bottom * scale_y


class Preprocessor:
    """Decodes one image at a time into a uint8 crop; normalises whole batches at once."""

    def __init__(self, *, limits: DecodeLimits = DecodeLimits(), jpeg_draft: bool = False) -> None:
        self._limits = limits
        self._jpeg_draft = jpeg_draft
        self._scale = (1.0 / (255.0 * np.asarray(IMAGENET_STD, dtype=np.float32)))[:, None, None]
        self._offset = (-np.asarray(IMAGENET_MEAN, dtype=np.float32) / np.asarray(IMAGENET_STD, dtype=np.float32))[
            :, None, None
        ]

    def crop(self, data: bytes) -> np.ndarray:
        """Encoded image -> uint8 HWC array of CROP_SIZE x CROP_SIZE x 3.

        Raises ImageRejected for anything that is not a supported, decodable image within
        the limits; no other exception escapes for bad input.
        """
        image = self._open(data)
        try:
            if self._jpeg_draft and image.format == "JPEG":
                # DCT-domain downscaling: decodes at 1/2, 1/4 or 1/8 scale while keeping both
                # sides >= 256, so the bilinear resize below still only shrinks.
                image.draft("RGB", (RESIZE_SHORTER_SIDE, RESIZE_SHORTER_SIDE))
            image = _apply_exif_orientation(image)
            rgb = _to_rgb(image)
            box = CropBox.for_size(*rgb.size)
            if max(box.resized_width, box.resized_height) <= EXACT_RESIZE_MAX_ASPECT * RESIZE_SHORTER_SIDE:
                resized = rgb.resize((box.resized_width, box.resized_height), Image.Resampling.BILINEAR)
                cropped = resized.crop(box.crop)
            else:
                cropped = rgb.resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR, box=box.in_source(*rgb.size))
            return np.asarray(cropped, dtype=np.uint8)
        except ImageRejected:
            raise
        except Exception as error:  # any decoder failure on untrusted bytes is the input's fault
            raise ImageRejected(f"cannot decode {image.format} image: {error}") from error

    def normalise(self, crops: np.ndarray) -> np.ndarray:
        """uint8 NHWC crops -> float32 NCHW, ImageNet-normalised, in one vectorised pass."""
        pixels = crops.transpose(0, 3, 1, 2).astype(np.float32)
        pixels *= self._scale
        pixels += self._offset
        return pixels

    def __call__(self, images: list[bytes]) -> np.ndarray:
        """Convenience for in-process use: encoded images -> float32 NCHW batch."""
        return self.normalise(np.stack([self.crop(data) for data in images]))

    def _open(self, data: bytes) -> Image.Image:
        if not data:
            raise ImageRejected("empty image: received 0 bytes")
        if len(data) > self._limits.max_bytes:
            raise ImageRejected(f"image is {len(data)} bytes, over the limit of {self._limits.max_bytes} bytes")
        try:
            # Our pixel limit below is the rule; Pillow's process-wide bomb check (a warning past
            # Image.MAX_IMAGE_PIXELS, an error past twice that) stays as it is for other code.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
        except Image.DecompressionBombError as error:
            # Pillow refuses past twice its own limit before we see the size; say it in our terms.
            ceiling = 2 * (Image.MAX_IMAGE_PIXELS or 0)
            if ceiling > self._limits.max_pixels:
                raise ImageRejected(f"image declares more than {ceiling} pixels, over the limit of "
                                    f"{self._limits.max_pixels} pixels") from error
            raise ImageRejected(f"refused before decoding: {error}") from error
        except UnidentifiedImageError as error:
            raise ImageRejected(
                f"not a supported image ({len(data)} bytes starting {data[:8]!r}); "
                f"expected one of {', '.join(SUPPORTED_FORMATS)}"
            ) from error
        except Exception as error:  # malformed headers raise many types
            raise ImageRejected(f"cannot read image header: {error}") from error
        width, height = image.size
        if width < 1 or height < 1:
            raise ImageRejected(f"image has no pixels ({width}x{height})")
        if width * height > self._limits.max_pixels:
            raise ImageRejected(
                f"{image.format} declares {width}x{height} = {width * height} pixels, "
                f"over the limit of {self._limits.max_pixels} pixels"
            )
        return image


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    if image.getexif().get(_EXIF_ORIENTATION, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's own I;16 -> RGB conversion clips at 255 instead of rescaling.
        image = _rescaled_to_grey(image, divisor=257.0)
    elif image.mode == "F":
        image = _rescaled_to_grey(image, divisor=1.0)
    if image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
        return _composite_on_white(image)
    # convert() copies even an RGB image: a decoded photo is already the RGB this returns.
    return image if image.mode == "RGB" else image.convert("RGB")


def _bands(size: tuple[int, int]) -> Iterator[tuple[int, int, int, int]]:
    """Boxes of whole rows covering an image of ``size``, about BAND_PIXELS each."""
    width, height = size
    rows = max(1, BAND_PIXELS // width)
    for top in range(0, height, rows):
        yield 0, top, width, min(top + rows, height)


def _rescaled_to_grey(image: Image.Image, *, divisor: float) -> Image.Image:
    """8-bit greyscale of a wide (16-bit, 32-bit or float) image, band by band: the float copy is one band's."""
    grey = np.empty((image.height, image.width), dtype=np.uint8)
    for box in _bands(image.size):
        wide = np.asarray(image.crop(box), dtype=np.float32)
        grey[box[1] : box[3]] = np.clip(np.rint(wide / divisor), 0, 255)
    return Image.fromarray(grey, mode="L")


def _composite_on_white(image: Image.Image) -> Image.Image:
    """RGB of ``image`` over opaque white, equal pixel for pixel to compositing the whole image at once
    (compositing is per pixel), but holding only the RGB result and one band's copies besides the source."""
    rgb = Image.new("RGB", image.size)
    for box in _bands(image.size):
        band = image.crop(box).convert("RGBA")
        white = Image.new("RGBA", band.size, (255, 255, 255, 255))
        rgb.paste(Image.alpha_composite(white, band).convert("RGB"), box[:2])
    return rgb
