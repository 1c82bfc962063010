"""Generated product-like photos (objects on light backgrounds) for tests, benchmarks and demos.

Deterministic per seed. They are not real photos, but they have what preprocessing and JPEG
care about: smooth gradients, hard edges, texture noise and varied sizes.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def product_image(seed: int, *, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """An RGB image of 1-3 coloured objects on a light, slightly graded background."""
    rng = np.random.default_rng(seed)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    tint = rng.uniform(215, 255, size=3)
    slope = rng.uniform(-25, 25, size=3)
    background = tint + slope * (xs / max(width, 1))[..., None] + (ys / max(height, 1))[..., None] * 10
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        colour = tuple(int(c) for c in rng.integers(0, 200, size=3))
        x0, y0 = rng.uniform(0.05, 0.55) * width, rng.uniform(0.05, 0.55) * height
        x1, y1 = x0 + rng.uniform(0.25, 0.45) * width, y0 + rng.uniform(0.25, 0.45) * height
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            draw.rounded_rectangle((x0, y0, x1, y1), radius=int(min(x1 - x0, y1 - y0) / 6), fill=colour)
        else:
            draw.polygon([(x0, y1), ((x0 + x1) / 2, y0), (x1, y1)], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=max(width, height) / 400))
    noise = rng.normal(0, 4, size=(height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **save_options: object) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        save_options.setdefault("quality", 90)
    image.save(buffer, format=fmt, **save_options)
    return buffer.getvalue()


def product_jpeg(seed: int, *, size: tuple[int, int] = (640, 480), quality: int = 90) -> bytes:
    return encode(product_image(seed, size=size), "JPEG", quality=quality)
