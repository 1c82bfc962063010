"""Labelled photos to train on: a folder per category, or a CSV with a ``category`` column."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from shopvision.catalog._model import CATEGORY_COLUMN
from shopvision.catalog.sources import CatalogSourceError, read_source
from shopvision.errors import ShopvisionError
from shopvision.images import IMAGE_SUFFIXES

IMAGE_COLUMN = "image_path"
MIN_PHOTOS_PER_CATEGORY = 10
"""Fewer leave too little for cross-validation folds and a held-out quarter to say anything."""


class TrainingDataError(ShopvisionError):
    """The labelled photos cannot train a head: unreadable source, too few photos, unreadable photos."""


@dataclass(frozen=True)
class LabelledPhoto:
    category: str
    path: Path
    product_id: str | None = None
    """The catalog product this photo is, when the CSV says (its stored vector can be reused)."""


def read_labelled(source: str | Path) -> list[LabelledPhoto]:
    """Photos with their categories, sorted by category then path.

    A folder holds one sub-folder per category (searched recursively). A CSV has ``image_path`` and
    ``category`` columns (paths relative to the CSV's folder), or is the catalog's own CSV
    (``product_id,image_path,...``) with a ``category`` column added.
    """
    source = Path(source)
    if source.is_dir():
        photos = _read_folders(source)
    elif source.suffix.lower() == ".csv" and source.is_file():
        photos = _read_csv(source)
    else:
        raise TrainingDataError(f"{source}: not a folder of category folders or a .csv file")
    if not photos:
        raise TrainingDataError(f"{source}: no labelled photos found")
    return sorted(photos, key=lambda photo: (photo.category, str(photo.path)))


def check_counts(photos: list[LabelledPhoto], *, minimum: int = MIN_PHOTOS_PER_CATEGORY) -> dict[str, int]:
    """Photos per category; refuses fewer than two categories or any category with fewer than ``minimum``."""
    counts = dict(sorted(Counter(photo.category for photo in photos).items()))
    if len(counts) < 2:
        raise TrainingDataError(f"a head needs at least 2 categories; found {list(counts) or 'none'}")
    short = {category: count for category, count in counts.items() if count < minimum}
    if short:
        listed = ", ".join(f"{category!r} ({count})" for category, count in short.items())
        raise TrainingDataError(f"every category needs at least {minimum} photos; too few: {listed}. "
                                "Add photos, or leave these categories out")
    return counts


def _read_folders(root: Path) -> list[LabelledPhoto]:
    photos = []
    for folder in sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith(".")):
        photos += [LabelledPhoto(category=folder.name, path=path) for path in sorted(folder.rglob("*"))
                   if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]
    return photos


def _read_csv(table: Path) -> list[LabelledPhoto]:
    with table.open(newline="", encoding="utf-8-sig") as stream:
        columns = csv.DictReader(stream).fieldnames or []
    if CATEGORY_COLUMN not in columns or IMAGE_COLUMN not in columns:
        raise TrainingDataError(f"{table}: needs the columns {IMAGE_COLUMN} and {CATEGORY_COLUMN} "
                                f"(or the catalog's product_id,image_path plus {CATEGORY_COLUMN}); has {columns}")
    if "product_id" in columns:
        try:
            items = read_source(table)
        except CatalogSourceError as error:
            raise TrainingDataError(str(error)) from error
        labelled: list[tuple[str, Path, str | None]] = [
            (item.extra.get(CATEGORY_COLUMN, "").strip(), item.path, item.product_id) for item in items]
    else:
        with table.open(newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.DictReader(stream))
        labelled = []
        for row in rows:
            path = Path((row.get(IMAGE_COLUMN) or "").strip())
            labelled.append(((row.get(CATEGORY_COLUMN) or "").strip(),
                             path if path.is_absolute() else table.parent / path, None))
    unlabelled = [str(path) for category, path, _ in labelled if not category]
    if unlabelled:
        raise TrainingDataError(f"{table}: {len(unlabelled)} row(s) without a category, e.g. {unlabelled[0]}")
    return [LabelledPhoto(category=category, path=path, product_id=product_id)
            for category, path, product_id in labelled]
