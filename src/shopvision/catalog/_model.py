"""Plain types of the catalog: what goes in, what is stored, what a search returns."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
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
class ProductPhoto:
    """One of a product's photos as the catalog holds it: where it came from and its bytes' sha256."""

    path: str
    content_sha256: str


@dataclass(frozen=True)
class Product:
    """What the catalog stores next to a product's vectors: one a photo, its main photo's first."""

    product_id: str
    path: str
    """Where the main photo came from (a file's path, a feed's URL)."""
    content_sha256: str
    """The main photo's sha256."""
    label: str
    """Top-1 ImageNet label of the main photo, for ``labels=`` filters."""
    extra: dict[str, str] = field(default_factory=dict)
    more_photos: tuple[ProductPhoto, ...] = ()
    """The product's other photos, in the shop's order (a feed's ``additional_image_link``)."""

    @property
    def key(self) -> int:
        return product_key(self.product_id)

    @property
    def photos(self) -> tuple[ProductPhoto, ...]:
        """Every photo, the main one first: a search hit's ``photo`` indexes this."""
        return (ProductPhoto(self.path, self.content_sha256), *self.more_photos)

    @property
    def fingerprint(self) -> str:
        """What :meth:`~shopvision.catalog.Catalog.fingerprints` holds for it: its photos' bytes, in order."""
        return photos_fingerprint([photo.content_sha256 for photo in self.photos])


@dataclass(frozen=True)
class SearchHit:
    product_id: str
    score: float
    """Cosine similarity of the L2-normalised embeddings (1.0 = same direction)."""
    path: str
    """Where the matched photo came from."""
    label: str
    extra: dict[str, str] = field(default_factory=dict)
    photo: int = 0
    """Which of the product's photos matched best (0: the main one); its score is the product's."""
    photos: tuple[ProductPhoto, ...] = ()
    """All of the product's photos, the main one first (``photos[photo]`` is the matched one)."""


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


def photo_key(product_id: str, photo: int) -> int:
    """A stable 63-bit id of a product's photo: its main photo's is the product's key (a catalog written before
    products had several photos holds just those); the others hash the id with the photo's place."""
    if photo == 0:
        return product_key(product_id)
    digest = hashlib.blake2b(f"{product_id}\x00{photo}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def photos_fingerprint(content_sha256s: Sequence[str]) -> str:
    """One digest of a product's photos in order: a one-photo product's is its photo's sha256 (as catalogs
    written before several photos hold), a product of several photos' the sha256 of theirs joined."""
    if len(content_sha256s) == 1:
        return content_sha256s[0]
    return hashlib.sha256(",".join(content_sha256s).encode()).hexdigest()


def best_per_product(hits: Iterable[SearchHit], k: int) -> list[SearchHit]:
    """Each product once, by its best-scoring photo, best first, at most ``k``: photo hits (best first) grouped."""
    best: dict[str, SearchHit] = {}
    for hit in hits:
        if hit.product_id not in best:
            best[hit.product_id] = hit
            if len(best) == k:
                break
    return list(best.values())
