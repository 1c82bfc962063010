"""The real data in ../shared/data, read for the real-weights report and tests (never copied into the repository).

The Grocery Store Dataset (Klasson et al., WACV 2019): shelf photos of 81 fine-grained products (43 coarse classes)
in ``train`` and ``val`` lists, and one iconic catalog photo per product. Each list row is
``path, fine class id, coarse class id``; ``classes.csv`` names the classes and their iconic photos.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
MOBILENET = SHARED_DATA / "mobilenetv2-12-int8" / "model.onnx"
GROCERY = SHARED_DATA / "grocery-store-dataset"
ABO = SHARED_DATA / "abo-product-samples" / "samples"
HISTOGRAM_BINS = 8
"""Per channel: an 8 x 8 x 8 RGB histogram (512 values), the colour baseline that needs no network."""


def real_data_present(*needed: Path) -> bool:
    """Whether these parts of ../shared/data are here; the first missing one is named on stderr."""
    for path in needed:
        if not path.exists():
            print(f"needs {path} (the real data in {SHARED_DATA}; see its README)", file=sys.stderr)
            return False
    return True


@dataclass(frozen=True)
class Photo:
    path: Path
    fine: str
    """The product (81 of them), e.g. ``Granny-Smith``."""
    coarse: str
    """Its coarse class (43), e.g. ``Apple``."""


@dataclass(frozen=True)
class Product:
    name: str
    coarse: str
    iconic: Path
    """The catalog photo."""


def products() -> list[Product]:
    """The 81 products with their iconic photos, in class-id order."""
    with (GROCERY / "classes.csv").open(newline="") as stream:
        rows = list(csv.reader(stream))[1:]
    return [Product(name=row[0], coarse=row[2], iconic=GROCERY / row[4].lstrip("/")) for row in rows]


def split(name: str) -> list[Photo]:
    """The ``train`` or ``val`` shelf photos, in list order."""
    by_id = products()
    photos = []
    for line in (GROCERY / f"{name}.txt").read_text().splitlines():
        path, fine, _ = (part.strip() for part in line.split(","))
        product = by_id[int(fine)]
        photos.append(Photo(path=GROCERY / path, fine=product.name, coarse=product.coarse))
    return photos


def write_training_csv(target: Path, photos: list[Photo], *, level: str) -> Path:
    """Photos as ``shopvision categories train``'s CSV: ``image_path`` and ``category`` (``fine`` or ``coarse``)."""
    with target.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["image_path", "category"])
        writer.writerows([str(photo.path), getattr(photo, level)] for photo in photos)
    return target


def colour_histogram(path: Path) -> np.ndarray:
    """An L2-normalised 8x8x8 RGB histogram of the whole photo (EXIF-rotated): cosine on these is the baseline."""
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    image.thumbnail((256, 256))
    pixels = np.asarray(image).reshape(-1, 3) // (256 // HISTOGRAM_BINS)
    codes = (pixels[:, 0] * HISTOGRAM_BINS + pixels[:, 1]) * HISTOGRAM_BINS + pixels[:, 2]
    histogram = np.bincount(codes, minlength=HISTOGRAM_BINS**3).astype(np.float32)
    return histogram / np.linalg.norm(histogram)


def recall_at(ranked: list[list[str]], truth: list[str], k: int) -> float:
    """The share of queries whose right answer is among their first ``k`` ranked answers."""
    return float(np.mean([answer in row[:k] for row, answer in zip(ranked, truth, strict=True)]))


def ranked_by_cosine(queries: np.ndarray, catalog: np.ndarray, names: list[str], k: int) -> list[list[str]]:
    """Exact nearest neighbours by cosine (unit vectors: inner product), best first."""
    scores = queries @ catalog.T
    return [[names[i] for i in np.argsort(-row)[:k]] for row in scores]
