"""Generated product-like photos (objects on light backgrounds) for tests, benchmarks and demos.

Deterministic per seed. They are not real photos, but they have what preprocessing and JPEG
care about: smooth gradients, hard edges, texture noise and varied sizes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from shopvision.errors import InvalidArgumentError


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


SAMPLE_CATEGORIES = ("red-round", "blue-boxy", "green-pointed", "striped", "dotted")
"""Generated categories that differ in colour, shape or texture, as a shop's categories would."""


def category_image(category: str, seed: int, *, size: tuple[int, int] = (400, 400)) -> Image.Image:
    """A product-like photo of ``category`` (one of :data:`SAMPLE_CATEGORIES`): position, size, hue,
    background and noise vary with ``seed``; what makes the category stays."""
    if category not in SAMPLE_CATEGORIES:
        raise InvalidArgumentError(f"unknown sample category {category!r}; known: {', '.join(SAMPLE_CATEGORIES)}")
    rng = np.random.default_rng([SAMPLE_CATEGORIES.index(category), seed])
    width, height = size
    background = tuple(int(c) for c in rng.uniform(210, 255, size=3))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    x0, y0 = rng.uniform(0.05, 0.35) * width, rng.uniform(0.05, 0.35) * height
    x1, y1 = x0 + rng.uniform(0.4, 0.6) * width, y0 + rng.uniform(0.4, 0.6) * height
    jitter = rng.integers(-30, 30, size=3)

    def colour(base: tuple[int, int, int]) -> tuple[int, ...]:
        return tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(base, jitter, strict=True))

    if category == "red-round":
        draw.ellipse((x0, y0, x1, y1), fill=colour((200, 40, 40)))
    elif category == "blue-boxy":
        draw.rectangle((x0, y0, x1, y1), fill=colour((40, 70, 190)))
    elif category == "green-pointed":
        draw.polygon([(x0, y1), ((x0 + x1) / 2, y0), (x1, y1)], fill=colour((40, 160, 60)))
    else:
        ink, paper = colour((60, 60, 60)), colour((235, 200, 120))
        draw.rectangle((x0, y0, x1, y1), fill=paper)
        step = int(rng.integers(10, 18))
        for down in range(0, int(y1 - y0) - step, step):
            if category == "striped":
                draw.rectangle((x0, y0 + down, x1, y0 + down + step // 2), fill=ink)
                continue
            for across in range(0, int(x1 - x0) - step, step):
                cx, cy = x0 + across + step / 2, y0 + down + step / 2
                draw.ellipse((cx - step / 4, cy - step / 4, cx + step / 4, cy + step / 4), fill=ink)
    image = image.filter(ImageFilter.GaussianBlur(radius=max(width, height) / 500))
    noise = rng.normal(0, 5, size=(height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8), "RGB")


def write_labelled_photos(folder: Path, *, per_category: int, seed: int = 0,
                          categories: tuple[str, ...] = SAMPLE_CATEGORIES) -> dict[str, list[Path]]:
    """``folder/<category>/<n>.jpg`` for each category: the layout ``shopvision categories train`` reads."""
    written: dict[str, list[Path]] = {}
    for category in categories:
        (folder / category).mkdir(parents=True, exist_ok=True)
        written[category] = []
        for index in range(per_category):
            path = folder / category / f"{index:04d}.jpg"
            path.write_bytes(encode(category_image(category, seed + index), "JPEG"))
            written[category].append(path)
    return written
