"""Real encoded test images of every kind the issue lists, built with Pillow."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from shopvision.samples import encode, product_image, product_jpeg

EXIF_ORIENTATION = 0x0112


def photo_jpeg(seed: int = 1, size: tuple[int, int] = (640, 480)) -> bytes:
    return encode(product_image(seed, size=size), "JPEG", quality=90)


def photo_png(seed: int = 2) -> bytes:
    return encode(product_image(seed, size=(500, 400)), "PNG")


def grayscale_jpeg(seed: int = 3) -> bytes:
    return encode(product_image(seed, size=(480, 640)).convert("L"), "JPEG", quality=90)


def grayscale_png(seed: int = 4) -> bytes:
    return encode(product_image(seed, size=(400, 400)).convert("L"), "PNG")


def cutout_rgba_png(seed: int = 5) -> bytes:
    """A product cut-out: opaque object, fully transparent background, soft edges."""
    rgb = product_image(seed, size=(512, 384))
    height, width = 384, 512
    ys, xs = np.mgrid[0:height, 0:width]
    distance = np.hypot((xs - width / 2) / (width * 0.35), (ys - height / 2) / (height * 0.35))
    alpha = (np.clip(1.2 - distance, 0, 1) * 255).astype(np.uint8)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(alpha, "L"))
    return encode(rgba, "PNG")


def cmyk_jpeg(seed: int = 6) -> bytes:
    return encode(product_image(seed, size=(600, 450)).convert("CMYK"), "JPEG", quality=92)


def exif_rotated_jpeg(seed: int = 7) -> bytes:
    """Stored landscape, EXIF orientation 6: displays rotated 90 degrees clockwise (portrait)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return encode(product_image(seed, size=(640, 480)), "JPEG", quality=90, exif=exif.tobytes())


def palette_png_with_transparency(seed: int = 8) -> bytes:
    image = product_image(seed, size=(300, 300)).quantize(colors=64)
    palette_index = image.getpixel((0, 0))
    return encode(image, "PNG", transparency=palette_index)


def sixteen_bit_png(seed: int = 9) -> bytes:
    wide = np.asarray(product_image(seed, size=(320, 240)).convert("L"), dtype=np.uint16) * 257
    return encode(Image.fromarray(wide.astype(np.uint16)), "PNG")


PARITY_CASES = {
    "jpeg": photo_jpeg,
    "png": photo_png,
    "grayscale-jpeg": grayscale_jpeg,
    "grayscale-png": grayscale_png,
    "rgba-cutout-png": cutout_rgba_png,
    "cmyk-jpeg": cmyk_jpeg,
    "exif-rotated-jpeg": exif_rotated_jpeg,
    "palette-transparent-png": palette_png_with_transparency,
    "16bit-png": sixteen_bit_png,
}


def one_pixel_png() -> bytes:
    return encode(Image.new("RGB", (1, 1), (200, 30, 60)), "PNG")


def extreme_wide_png(seed: int = 10) -> bytes:
    return encode(product_image(seed, size=(10000, 10)), "PNG")


def extreme_tall_jpeg(seed: int = 11) -> bytes:
    return encode(product_image(seed, size=(12, 6000)), "JPEG", quality=90)


def animated_gif(seed: int = 12) -> bytes:
    """Three frames; the first one is served (documented)."""
    frames = [product_image(seed + i, size=(320, 240)).quantize(colors=128) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def webp(seed: int = 13) -> bytes:
    return encode(product_image(seed, size=(400, 300)), "WEBP", quality=90)


def tiff(seed: int = 14) -> bytes:
    return encode(product_image(seed, size=(400, 300)), "TIFF")


PARITY_CASES.update({
    "1x1-png": one_pixel_png,
    "10000x10-png": extreme_wide_png,
    "12x6000-jpeg": extreme_tall_jpeg,
    "animated-gif": animated_gif,
    "webp": webp,
    "tiff": tiff,
})


def write_catalog(directory: Path, count: int, *, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[Path]:
    """``count`` JPEG files named ``product-00000.jpg``... in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = directory / f"product-{index:05d}.jpg"
        path.write_bytes(product_jpeg(seed + index, size=size))
        paths.append(path)
    return paths
