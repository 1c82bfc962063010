"""A small demo catalog of generated product photos, for a first look at the page without a shop's data."""

from __future__ import annotations

import csv
from pathlib import Path

from shopvision.catalog import BuildReport, Catalog
from shopvision.client import Client
from shopvision.samples import product_jpeg

DEMO_PRODUCTS = 60
DEMO_BANNER = ("Demo data: the catalog holds generated product-like pictures, not a shop's photos "
               "(set SHOPVISION_CATALOG to serve your own).")
_COLOURS = ("red", "blue", "green", "black", "white", "yellow")


def build_demo_catalog(directory: Path, *, triton_url: str) -> str:
    """Index the demo photos into ``directory/catalog`` (once; later starts reuse it) and return its location."""
    photos, location = directory / "photos", directory / "catalog"
    manifest = directory / "products.csv"
    if not manifest.exists():
        photos.mkdir(parents=True, exist_ok=True)
        rows = []
        for index in range(DEMO_PRODUCTS):
            path = photos / f"demo-{index:03d}.jpg"
            path.write_bytes(product_jpeg(10_000 + index, size=(480, 480)))
            rows.append({"product_id": f"demo-{index:03d}", "image_path": str(path.resolve()),
                         "title": f"Demo product {index}", "colour": _COLOURS[index % len(_COLOURS)]})
        partial = manifest.with_suffix(".partial")
        with partial.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        partial.replace(manifest)
    with Client(triton_url) as client, Catalog.open(location, client=client) as catalog:
        client.wait_until_ready(timeout_s=120)
        report: BuildReport = catalog.build(manifest)
    if report.failed:
        raise RuntimeError(f"the demo catalog could not index {len(report.failed)} photos: {report.failed[:3]}")
    return str(location)
