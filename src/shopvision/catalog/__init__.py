"""Visual search over a product catalog: embedded FAISS + SQLite, or Milvus (Lite or a cluster).

Needs the ``catalog`` extra (FAISS) or the ``milvus`` extra.
"""

from shopvision.catalog._model import (
    CATEGORY_COLUMN,
    BuildReport,
    CatalogItem,
    CatalogStats,
    Photo,
    Product,
    ProductPhoto,
    SearchHit,
    categorised,
    photos_fingerprint,
)
from shopvision.catalog._store import CatalogError, VectorStore
from shopvision.catalog.catalog import BUILD_BATCH, Catalog
from shopvision.catalog.sources import CatalogSourceError, read_source

__all__ = [
    "BUILD_BATCH",
    "CATEGORY_COLUMN",
    "BuildReport",
    "Catalog",
    "CatalogError",
    "CatalogItem",
    "CatalogSourceError",
    "CatalogStats",
    "Photo",
    "Product",
    "ProductPhoto",
    "SearchHit",
    "VectorStore",
    "categorised",
    "photos_fingerprint",
    "read_source",
]
