"""Read what to index: a folder of photos or a CSV of ``product_id,image_path[,extra columns]``.

A CSV may give a product several rows: each adds a photo (the first row's is its main one, and its metadata).
"""

from __future__ import annotations

import csv
from pathlib import Path

from shopvision.catalog._model import CatalogItem
from shopvision.errors import ShopvisionError
from shopvision.images import IMAGE_SUFFIXES

REQUIRED_COLUMNS = ("product_id", "image_path")


class CatalogSourceError(ShopvisionError):
    """The folder or CSV to index is missing or malformed."""


def read_source(source: str | Path) -> list[CatalogItem]:
    """Items of a folder (product id = path relative to it, without suffix) or of a CSV.

    CSV image paths are relative to the CSV's folder unless absolute.
    """
    source = Path(source)
    if source.is_dir():
        return _read_folder(source)
    if source.suffix.lower() == ".csv" and source.is_file():
        return _read_csv(source)
    raise CatalogSourceError(f"{source}: not a folder of images or a .csv file")


def _read_folder(folder: Path) -> list[CatalogItem]:
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [CatalogItem(product_id=p.relative_to(folder).with_suffix("").as_posix(), path=p) for p in paths]


def _read_csv(table: Path) -> list[CatalogItem]:
    with table.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise CatalogSourceError(f"{table}: missing column(s) {', '.join(missing)}; "
                                     f"the header must start with {','.join(REQUIRED_COLUMNS)}")
        items: list[CatalogItem] = []
        first: dict[str, CatalogItem] = {}
        for line, row in enumerate(reader, start=2):
            product_id = (row.pop("product_id") or "").strip()
            image_path = (row.pop("image_path") or "").strip()
            if not product_id or not image_path:
                raise CatalogSourceError(f"{table}:{line}: product_id and image_path must not be empty")
            extra = {key: value or "" for key, value in row.items() if key is not None}
            if product_id in first and any(extra.values()) and extra != first[product_id].extra:
                raise CatalogSourceError(f"{table}:{line}: {product_id!r} has another row with other metadata: a "
                                         "product's further rows add photos, and leave the other columns empty")
            path = Path(image_path)
            item = CatalogItem(product_id=product_id, path=path if path.is_absolute() else table.parent / path,
                               extra=first[product_id].extra if product_id in first else extra)
            first.setdefault(product_id, item)
            items.append(item)
    return items
