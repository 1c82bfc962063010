"""The interface every vector engine implements; the catalog talks only to this."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from shopvision.catalog._model import Product, SearchHit
from shopvision.catalog.filters import Condition
from shopvision.errors import ShopvisionError


class CatalogError(ShopvisionError):
    """The catalog index cannot be opened, or does not match the model or the request."""


def catalog_width(location: str, stored: Mapping[str, str], wanted: int | None) -> int | None:
    """The width of a catalog's vectors: what it holds, which must be ``wanted`` when that is given too.

    None for a new catalog opened without a width: its first write gives it one (the served model's).
    """
    held = stored.get("dimension")
    if held is None:
        return wanted
    if wanted is not None and int(held) != wanted:
        made_by = stored.get("backbone") or stored.get("model_source") or "another model"
        raise CatalogError(f"{location} holds {held}-d vectors made by {made_by}, but the served model's embeddings "
                           f"are {wanted}-d: it was built on another backbone. Rebuild the catalog into a new "
                           "location with the served model, or serve the backbone it was built with")
    return int(held)


class VectorStore(Protocol):
    engine: str
    location: str

    def metadata(self) -> dict[str, str]:
        """Catalog-wide settings (dimension, the model that made the vectors)."""

    def set_metadata(self, values: dict[str, str]) -> None: ...

    def fingerprints(self) -> dict[str, str]:
        """``Product.fingerprint`` (its photos' content hash) of every stored product, by product id (what
        incremental builds skip)."""

    def photo_contents(self) -> set[str]:
        """The sha256 of every photo of every product (which stored photo files are in use)."""

    def upsert(self, products: Sequence[Product], vectors: np.ndarray) -> None:
        """Store products and their vectors (a row a photo, each product's in turn, its main photo first),
        replacing ones with the same product id, all or nothing."""

    def remove(self, product_ids: Sequence[str]) -> int:
        """Delete products; returns how many existed."""

    def content_in_use(self, content_sha256: str) -> bool:
        """Whether any product's photo has these bytes."""

    def get(self, product_id: str) -> tuple[Product, np.ndarray] | None:
        """A stored product and its vectors (a row a photo, the main one first), or None."""

    def extra_columns(self) -> frozenset[str] | None:
        """The metadata columns products have (for filters), or None where the engine cannot list them."""

    def page(self, *, after: str | None, limit: int) -> list[Product]:
        """Up to ``limit`` products in product-id order (code point order), those after ``after`` only."""

    def search(self, queries: np.ndarray, *, k: int, labels: Sequence[str] | None,
               where: Sequence[Condition] = ()) -> list[list[SearchHit]]:
        """The k best products per query row by inner product, optionally only those with these labels and whose
        metadata passes every condition of ``where`` (:mod:`shopvision.catalog.filters`). A filter keeps recall:
        while k products pass it, k are returned. A product is answered once, scored by its best photo."""

    def count(self) -> int: ...

    def label_counts(self) -> dict[str, int]: ...

    def index_kind(self) -> str: ...

    def deleted_slots(self) -> int:
        """Vectors of replaced or deleted products the index still holds (masked until its next rebuild)."""

    def index_ready(self) -> bool:
        """Whether searches run now, without first loading or building an index."""

    def prepare(self) -> None:
        """Load what searches need (FAISS: the index), so that the first search does not."""

    def maintain(self) -> None:
        """Background upkeep of a long-running process, called every second or so (FAISS: follow other
        writers, rebuild and checkpoint the index; Milvus does its own)."""

    def flush(self) -> None:
        """Make what was stored durable and fast to search (FAISS: save the index; Milvus: seal segments)."""

    def close(self) -> None:
        """Flush, then release the files or connection."""
