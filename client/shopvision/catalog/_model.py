"""Plain types of the catalog: what goes in, what is stored, what a search returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from shopvision.types import Prediction

CATEGORY_COLUMN = "category"
"""The metadata column of a product's category: the shop's own, or its categories head's top-1."""


@dataclass(frozen=True)
class CatalogItem:
    """One product photo to index. ``extra`` holds the CSV's other columns."""

    product_id: str
    path: Path
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Photo:
    """A product photo's bytes, ready to embed: from a file (``source`` its path) or a feed (its URL)."""

    product_id: str
    source: str
    data: bytes = field(repr=False)
    extra: dict[str, str] = field(default_factory=dict)

    @cached_property
    def content_sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Product:
    """What the catalog stores next to a product's vector."""

    product_id: str
    path: str
    content_sha256: str
    label: str
    """Top-1 ImageNet label of the photo, for ``labels=`` filters."""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> int:
        return product_key(self.product_id)


@dataclass(frozen=True)
class SearchHit:
    product_id: str
    score: float
    """Cosine similarity of the L2-normalised embeddings (1.0 = same direction)."""
    path: str
    label: str
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class BuildReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(product id, reason) of photos that could not be read or were rejected by the server."""


@dataclass(frozen=True)
class CatalogStats:
    engine: str
    location: str
    products: int
    dimension: int
    index: str
    """How searches run: ``exact``, ``hnsw`` or the Milvus index type."""
    model_source: str | None
    model_sha256: str | None
    labels: dict[str, int]
    """Products per top-1 label, most frequent first (at most 20)."""
    backbone: str | None = None
    """The network that made the vectors (the served one when the catalog was first written)."""
    deleted_slots: int = 0
    """Vectors of replaced or deleted products the index still holds, masked at search time until a rebuild."""


def categorised(extra: dict[str, str], categories: list[Prediction]) -> dict[str, str]:
    """A product's metadata with the categories head's top-1 category, unless the shop already gave one."""
    if extra.get(CATEGORY_COLUMN) or not categories:
        return dict(extra)
    return {**extra, CATEGORY_COLUMN: categories[0].label}


def product_key(product_id: str) -> int:
    """A stable 63-bit integer id for a product id (vector engines key vectors by int64)."""
    digest = hashlib.blake2b(product_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
