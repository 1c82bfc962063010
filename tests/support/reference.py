"""An independent reference of the ResNet evaluation recipe, written for the tests only.

Deliberately not shopvision.backend.preprocessing: full JPEG decode (no draft mode), the whole image
resized and then cropped by array slicing, transparency blended in numpy.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def reference_pixels(data: bytes) -> np.ndarray:
    """Encoded image -> float32 [3, 224, 224]."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if image.mode.startswith("I"):
        image = Image.fromarray(np.rint(np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3:] / 255.0
        blended = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        image = Image.fromarray(np.rint(blended).astype(np.uint8), "RGB")
    image = image.convert("RGB")
    width, height = image.size
    size = (256, int(256 * height / width)) if width <= height else (int(256 * width / height), 256)
    resized = np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float64)
    top = int(round((size[1] - 224) / 2.0))
    left = int(round((size[0] - 224) / 2.0))
    crop = resized[top : top + 224, left : left + 224] / 255.0
    return ((crop - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)
