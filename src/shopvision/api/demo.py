"""A small demo catalog for a first look at the page without a shop's data: a folder of real product photos
when one is given (``make serve`` passes the Grocery Store Dataset's catalog photos when ../shared/data is beside
the checkout), generated product-like pictures otherwise."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from shopvision.catalog import BuildReport, Catalog, CatalogError
from shopvision.catalog.sources import CatalogSourceError, read_source
from shopvision.client import Client
from shopvision.samples import product_jpeg

DEMO_PRODUCTS = 60
DEMO_BANNER = ("Demo data: the catalog holds generated product-like pictures, not a shop's photos "
               "(set SHOPVISION_CATALOG to serve your own).")
_COLOURS = ("red", "blue", "green", "black", "white", "yellow")


def demo_banner(photos: Path | None) -> str:
    if photos is None:
        return DEMO_BANNER
    return (f"Demo data: the catalog holds the real product photos of {photos.name}/, not your shop's "
            "(set SHOPVISION_CATALOG to serve your own).")


def build_demo_catalog(directory: Path, *, triton_url: str, photos: Path | None = None) -> str:
    """Index the demo photos into a catalog under ``directory`` and return its location.

    Each served model gets a catalog of its own (vectors of two backbones are not comparable), built on its
    first start and reused by later ones. ``photos`` is a folder of real product photos (one product per photo,
    searched recursively); without it, generated pictures."""
    manifest = directory / ("products.csv" if photos is None else "real-products.csv")
    if not manifest.exists():
        directory.mkdir(parents=True, exist_ok=True)
        rows = _real_rows(photos) if photos is not None else _generated_rows(directory / "photos")
        if not rows:
            raise CatalogSourceError(f"no photos in {photos} for the demo catalog")
        partial = manifest.with_suffix(".partial")
        with partial.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        partial.replace(manifest)
    with Client(triton_url) as client:
        client.wait_until_ready(timeout_s=120)
        served = client.provenance()
        location = directory / f"{manifest.stem}-{(served.model_sha256 or 'unknown')[:12]}"
        with Catalog.open(location, client=client) as catalog:
            report: BuildReport = catalog.build(manifest)
    if report.failed:
        raise CatalogError(f"the demo catalog could not index {len(report.failed)} photos: {report.failed[:3]}")
    return str(location)


def _generated_rows(photos: Path) -> list[dict[str, str]]:
    photos.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(DEMO_PRODUCTS):
        path = photos / f"demo-{index:03d}.jpg"
        path.write_bytes(product_jpeg(10_000 + index, size=(480, 480)))
        rows.append({"product_id": f"demo-{index:03d}", "image_path": str(path.resolve()),
                     "title": f"Demo product {index}", "colour": _COLOURS[index % len(_COLOURS)]})
    return rows


def _real_rows(folder: Path) -> list[dict[str, str]]:
    """A product per photo: named after its folder when the folder holds only that photo (one folder per product,
    as the Grocery Store Dataset's catalog photos are), else after the file; grouped by the folder above."""
    paths = [item.path for item in read_source(folder)]
    per_folder = Counter(path.parent for path in paths)
    rows = []
    for path in paths:
        alone = per_folder[path.parent] == 1 and path.parent != folder
        name = path.parent.name if alone else path.stem
        group = path.parent.parent if alone else path.parent
        rows.append({"product_id": name, "image_path": str(path.resolve()), "title": name.replace("-", " "),
                     "group": "" if group == folder else group.name})
    return rows
