"""The catalog: index product photos through the server, then find look-alikes of a query photo."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shopvision.catalog._model import (
    BuildReport,
    CatalogItem,
    CatalogStats,
    Photo,
    Product,
    ProductPhoto,
    SearchHit,
    best_per_product,
    categorised,
    photos_fingerprint,
)
from shopvision.catalog._store import CatalogError, VectorStore, catalog_width
from shopvision.catalog.faiss_store import HNSW_EF_SEARCH, FaissStore
from shopvision.catalog.filters import Where, conditions
from shopvision.catalog.milvus_store import DEFAULT_COLLECTION, MilvusConnection, MilvusStore, is_milvus_uri
from shopvision.catalog.sources import read_source
from shopvision.contract import MAX_PRODUCT_PHOTOS, RESNET50_BACKBONE
from shopvision.errors import InvalidArgumentError
from shopvision.images import ImageInput

if TYPE_CHECKING:
    from shopvision.client import Client
    from shopvision.types import WeightsProvenance

Progress = Callable[[int, int], None]
BUILD_BATCH = 128
"""Products embedded and committed together: a crash loses at most this many embeddings."""


class Catalog:
    """Product photos indexed by their embeddings, searchable by a query photo.

    ``location`` picks the engine: a folder is the embedded engine (FAISS + SQLite); a path
    ending in ``.db`` is a Milvus Lite file; ``http(s)://host:19530`` is a Milvus server.
    Pass a :class:`shopvision.Client` to index photos and search by photo; searching by vector
    needs none.

    >>> with shopvision.Client() as client, Catalog.open("catalog/", client=client) as catalog:  # doctest: +SKIP
    ...     catalog.build("photos/")
    ...     catalog.search("query.jpg", k=5)
    """

    def __init__(self, store: VectorStore, *, client: Client | None = None) -> None:
        self._store = store
        self._client = client
        self._checked_model = False

    @classmethod
    def open(cls, location: str | Path, *, client: Client | None = None, collection: str = DEFAULT_COLLECTION,
             milvus: MilvusConnection | None = None, index: str = "auto", dimension: int | None = None,
             ef_search: int | None = None) -> Catalog:
        """Open or create a catalog; ``collection`` and ``milvus`` (token, TLS) are for Milvus, ``index`` and
        ``ef_search`` (HNSW candidates per search, default 128: more is closer to exact and slower) for FAISS.

        A new catalog takes its vectors' width from the first ones written (the served backbone's embedding),
        unless ``dimension`` fixes it now; an existing one holds its own, which ``dimension`` must equal.
        """
        location = str(location)
        if is_milvus_uri(location):
            store: VectorStore = MilvusStore(location, dimension=dimension, collection=collection, connection=milvus)
        else:
            store = FaissStore(location, dimension=dimension, index=index,
                               ef_search=HNSW_EF_SEARCH if ef_search is None else ef_search)
        return cls(store, client=client)

    @property
    def location(self) -> str:
        """Where the catalog lives (a folder, a Milvus Lite file, or a Milvus URI with its collection)."""
        return self._store.location

    def build(self, source: str | Path | Sequence[CatalogItem], *, prune: bool = False,
              batch_size: int = BUILD_BATCH, progress: Progress | None = None) -> BuildReport:
        """Index a folder, CSV or items: adds new and changed products, skips unchanged ones.

        Items with the same product id are one product's photos, the first its main one (and its metadata's).
        Resumable: each batch of ``batch_size`` products is committed as a whole, so an
        interrupted build keeps what it committed and the next run continues from there.
        ``prune`` also removes products that are no longer in the source.
        """
        items = read_source(source) if isinstance(source, (str, Path)) else list(source)
        grouped: dict[str, list[CatalogItem]] = {}
        for item in items:
            grouped.setdefault(item.product_id, []).append(item)
        products = list(grouped.values())
        report = BuildReport()
        # Asked once a build: products get their category (top 1) from a head that serves when the build starts.
        categories = 1 if items and self._client is not None and self._require_client().serves_categories() else 0
        known = self._store.fingerprints()
        if prune:
            report.removed = self._store.remove([pid for pid in known if pid not in grouped])
        for start in range(0, len(products), batch_size):
            self._build_batch(products[start:start + batch_size], known, report, categories=categories)
            if progress is not None:
                progress(min(start + batch_size, len(products)), len(products))
        self._store.flush()
        return report

    def add(self, items: Sequence[CatalogItem]) -> BuildReport:
        """Index these items (new or changed ones); same as :meth:`build` with a list."""
        return self.build(items)

    def upsert(self, products: Sequence[Product], vectors: np.ndarray) -> None:
        """Store products with embeddings computed elsewhere (same model!), replacing same ids: ``vectors`` has a
        row a photo, each product's photos in turn (its main one first; one row for a one-photo product).

        Call :meth:`flush` after a series of upserts (``build`` and ``close`` do it themselves).
        """
        self._store.upsert(products, vectors)

    def flush(self) -> None:
        """Make what was stored durable and fast to search."""
        self._store.flush()

    def prepare(self) -> None:
        """Load what searches need now (the embedded engine's index), instead of on the first search."""
        self._store.prepare()

    def index_ready(self) -> bool:
        """Whether a search runs now without first loading or building an index."""
        return self._store.index_ready()

    def maintain(self) -> None:
        """Upkeep for a long-running process, every second or so: rebuild and checkpoint the embedded
        engine's index in the background (see :mod:`shopvision.catalog.faiss_store`)."""
        self._store.maintain()

    def content_in_use(self, content_sha256: str) -> bool:
        """Whether any product's photo has these bytes (whether a stored photo file may be removed)."""
        return self._store.content_in_use(content_sha256)

    def fingerprints(self) -> dict[str, str]:
        """A digest of every product's photos, by product id: a one-photo product's photo's sha256, one of several
        photos' :func:`~shopvision.catalog.photos_fingerprint` (``Product.fingerprint``)."""
        return self._store.fingerprints()

    def photo_contents(self) -> set[str]:
        """The sha256 of every photo of every product."""
        return self._store.photo_contents()

    def remove(self, product_ids: Sequence[str]) -> int:
        """Delete products by id; returns how many were in the catalog."""
        return self._store.remove(list(product_ids))

    def search(self, query: ImageInput | np.ndarray, *, k: int = 10, labels: Sequence[str] | None = None,
               where: Where = None) -> list[SearchHit]:
        """The ``k`` most similar products to a photo (or a vector as wide as the catalog's), best first.

        A product of several photos is scored by its best one (``hit.photo`` says which) and answered once.
        ``labels`` keeps only products whose top-1 ImageNet label is one of these; ``where`` only those whose
        metadata passes every condition: ``{"colour": "red"}``, or ``["price<50", "brand in (acme,zenith)"]``
        (:mod:`shopvision.catalog.filters`; columns from :meth:`extra_columns`).
        """
        return self.search_many([query], k=k, labels=labels, where=where)[0]

    def similar(self, product_id: str, *, k: int = 10, labels: Sequence[str] | None = None,
                where: Where = None) -> list[SearchHit] | None:
        """"More like this": the ``k`` products nearest a stored one's photos (itself left out), each scored by the
        best pair of photos, or None when the product is not in the catalog. Nothing is embedded again."""
        stored = self._store.get(product_id)
        if stored is None:
            return None
        per_photo = self._store.search(stored[1], k=k + 1, labels=labels, where=conditions(where))
        hits = sorted((hit for hits in per_photo for hit in hits if hit.product_id != product_id),
                      key=lambda hit: -hit.score)
        return best_per_product(hits, k)

    def get(self, product_id: str) -> Product | None:
        stored = self.stored(product_id)
        return None if stored is None else stored[0]

    def stored(self, product_id: str) -> tuple[Product, np.ndarray] | None:
        """A product with the vectors the catalog holds for it (a row a photo, the main one first), or None when
        it is not in the catalog."""
        return self._store.get(product_id)

    def page(self, *, after: str | None = None, limit: int = 100) -> list[Product]:
        """Up to ``limit`` products in product-id order, those after the id ``after`` only: a cursor that stays
        valid while products are added and removed (each page starts after the last id of the one before)."""
        if limit < 1:
            raise InvalidArgumentError("limit must be at least 1")
        return self._store.page(after=after, limit=limit)

    def update_metadata(self, product_id: str, changes: Mapping[str, str | None]) -> Product | None:
        """Merge ``changes`` into a product's metadata (None removes a field) and store it with the vector the
        catalog holds: nothing is embedded again. None when the product is not in the catalog."""
        written = self.patch_metadata({product_id: changes})
        return written[0] if written else None

    def patch_metadata(self, patches: Mapping[str, Mapping[str, str | None]]) -> list[Product]:
        """:meth:`update_metadata` of several products, as one write; returns those stored (the others are not in
        the catalog)."""
        updated = []
        for product_id, changes in patches.items():
            product = self.get(product_id)
            if product is not None:
                extra = {**product.extra, **changes}
                updated.append(dataclasses.replace(product, extra={key: value for key, value in extra.items()
                                                                   if value is not None}))
        return self.rewrite_metadata(updated)

    def rewrite_metadata(self, products: Sequence[Product]) -> list[Product]:
        """Store these products as given (new metadata) with the vectors the catalog holds for them, as one write:
        nothing is embedded again. Products no longer in the catalog are skipped; returns those stored."""
        held = [(product, self._store.get(product.product_id)) for product in products]
        # The vectors are the held photos': a product given with other photos' bytes keeps the held ones (the same
        # bytes may have moved, and their new paths are kept).
        kept = [(product if product.fingerprint == stored[0].fingerprint else
                 dataclasses.replace(product, path=stored[0].path, content_sha256=stored[0].content_sha256,
                                     more_photos=stored[0].more_photos), stored[1])
                for product, stored in held if stored is not None]
        if kept:
            self._store.upsert([product for product, _ in kept], np.concatenate([vectors for _, vectors in kept]))
        return [product for product, _ in kept]

    def extra_columns(self) -> frozenset[str] | None:
        """The metadata columns products have, or None where the engine cannot list them (Milvus)."""
        return self._store.extra_columns()

    def search_many(self, queries: Sequence[ImageInput | np.ndarray], *, k: int = 10,
                    labels: Sequence[str] | None = None, where: Where = None) -> list[list[SearchHit]]:
        if k < 1:
            raise InvalidArgumentError("k must be at least 1")
        checked = conditions(where)  # a bad filter is refused before any photo is embedded
        if not queries:
            return []
        photos = {index: query for index, query in enumerate(queries) if not isinstance(query, np.ndarray)}
        embedded: dict[int, np.ndarray] = {}
        if photos:
            embedded = dict(zip(photos, self._require_client().embed(list(photos.values())), strict=True))
        vectors = [query if isinstance(query, np.ndarray) else embedded[index] for index, query in enumerate(queries)]
        return self._store.search(np.stack(vectors), k=k, labels=labels, where=checked)

    def count(self) -> int:
        """How many products the catalog holds."""
        return self._store.count()

    def stats(self) -> CatalogStats:
        metadata = self._store.metadata()
        return CatalogStats(
            engine=self._store.engine, location=self._store.location, products=self._store.count(),
            dimension=int(metadata.get("dimension", 0)), index=self._store.index_kind(),
            model_source=metadata.get("model_source"), model_sha256=metadata.get("model_sha256"),
            backbone=metadata.get("backbone"), deleted_slots=self._store.deleted_slots(),
            labels=self._store.label_counts(),
        )

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _build_batch(self, products: Sequence[list[CatalogItem]], known: dict[str, str], report: BuildReport, *,
                     categories: int) -> None:
        pending: list[Photo] = []
        for items in products:
            photos = []
            for item in items:
                try:
                    photos.append(Photo(item.product_id, str(item.path), item.path.read_bytes(), items[0].extra))
                except OSError as error:
                    report.failed.append((item.product_id, f"cannot read {item.path}: {error.strerror or error}"))
                    break
            else:
                if known.get(items[0].product_id) == photos_fingerprint([photo.content_sha256 for photo in photos]):
                    report.unchanged += 1
                else:
                    pending += photos
        stored, failed = self.index_photos(pending, categories=categories)
        report.failed.extend(failed)
        for product in stored:
            if product.product_id in known:
                report.updated += 1
            else:
                report.added += 1
            known[product.product_id] = product.fingerprint

    def index_photos(self, photos: Sequence[Photo], *, categories: int | None = None
                     ) -> tuple[list[Product], list[tuple[str, str]]]:
        """Embed photos through the server and store them, replacing products with the same ids, as one write.

        Photos with the same product id are that product's, the first its main one, whose metadata and top-1
        label the product takes. Returns the products stored and (product id, reason) of those not stored: a
        product with a photo the server refused, or with more than ``MAX_PRODUCT_PHOTOS``. ``categories`` (1 or 0)
        says whether to ask the categories head for a category; None asks the server whether one serves.
        """
        grouped: dict[str, list[Photo]] = {}
        for photo in photos:
            grouped.setdefault(photo.product_id, []).append(photo)
        failed = [(product_id, f"{len(group)} photos: a product has at most {MAX_PRODUCT_PHOTOS}")
                  for product_id, group in grouped.items() if len(group) > MAX_PRODUCT_PHOTOS]
        for product_id, _ in failed:
            del grouped[product_id]
        if not grouped:
            return [], failed
        client = self._require_client()
        if categories is None:
            categories = 1 if client.serves_categories() else 0
        ordered = [photo for group in grouped.values() for photo in group]
        results = iter(client.analyze([photo.data for photo in ordered], top_k=1, categories=categories,
                                      on_error="report"))
        products, vectors = [], []
        for product_id, group in grouped.items():
            analysed = [next(results) for _ in group]
            refused = [(photo, result.error) for photo, result in zip(group, analysed, strict=True) if result.error]
            if refused:
                photo, error = refused[0]
                where = "" if len(group) == 1 else f"photo {group.index(photo) + 1} of {len(group)}, {photo.source}: "
                failed.append((product_id, f"{where}{error.reason}"))
                continue
            main, first = group[0], analysed[0]
            products.append(Product(product_id=product_id, path=main.source, content_sha256=main.content_sha256,
                                    label=first.predictions[0].label, extra=categorised(main.extra, first.categories),
                                    more_photos=tuple(ProductPhoto(photo.source, photo.content_sha256)
                                                      for photo in group[1:])))
            vectors += [result.vector for result in analysed]
        if products:
            self._store.upsert(products, np.stack(vectors))
        return products, failed

    def _require_client(self) -> Client:
        if self._client is None:
            raise CatalogError("embedding photos needs a server: open the catalog with client=shopvision.Client(...)")
        if not self._checked_model:
            self.check_model(self._client.provenance(), url=self._client.url)
            self._checked_model = True
        return self._client

    def check_model(self, served: WeightsProvenance, *, url: str) -> None:
        """Vectors from different weights are not comparable: refuse to mix them (an empty catalog
        takes the served model as its own). Another backbone is named as such, with both widths."""
        metadata = self._store.metadata()
        if metadata.get("model_sha256") is None:
            catalog_width(self._store.location, metadata, served.embedding_dim or None)
            self._store.set_metadata({"model_sha256": served.model_sha256 or "unknown", "model_source": served.source,
                                      "backbone": served.backbone})
        elif (mismatch := model_mismatch(self._store.location, metadata, served, url=url)) is not None:
            raise mismatch

    def metadata(self) -> dict[str, str]:
        """Catalog-wide settings: width, and the model that made the vectors."""
        return self._store.metadata()


def model_mismatch(location: str, metadata: Mapping[str, str], served: WeightsProvenance, *,
                   url: str) -> CatalogError | None:
    """Why a catalog with this metadata cannot be searched with the served model's embeddings, or None."""
    indexed = metadata.get("model_sha256")
    if indexed is None or indexed == (served.model_sha256 or "unknown"):
        return None
    # Catalogs made before backbones were a choice hold ResNet50 vectors.
    backbone = metadata.get("backbone", RESNET50_BACKBONE)
    width = metadata.get("dimension", "?")
    what = ("another backbone" if backbone != served.backbone else "other weights of the same backbone")
    return CatalogError(
        f"{location} was indexed with {backbone} ({width}-d, model sha256 {indexed}, "
        f"{metadata.get('model_source')}), but {url} serves {served.backbone} ({served.embedding_dim}-d, "
        f"model sha256 {served.model_sha256}, {served.source}): {what}, whose vectors are not comparable; "
        "rebuild the catalog into a new location with the served model")
