"""The scale-out engine: Milvus through ``pymilvus.MilvusClient``.

One code path for Milvus Lite (``uri`` is a local ``*.db`` file) and a Milvus server or cluster
(``uri`` is ``http(s)://host:19530``, with a token). Products and their metadata live in one
collection, an entity a photo: a product's main photo is keyed by the product's key, its others by
:func:`~shopvision.catalog._model.photo_key`, each with the product's id, label and metadata (so that filters
apply to every photo), and a search groups them by product id (Milvus's grouping search). Catalog-wide settings
are collection properties.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shopvision.catalog._model import Product, ProductPhoto, SearchHit, photo_key
from shopvision.catalog._store import CatalogError, catalog_width
from shopvision.catalog.filters import Condition, as_number

DEFAULT_COLLECTION = "shopvision_catalog"
PROPERTY_PREFIX = "shopvision."
INDEX_TYPE = "HNSW"
INDEX_PARAMS = {"M": 32, "efConstruction": 80}
SEARCH_PARAMS = {"ef": 128}
_SCAN_BATCH = 4096
_FIELDS = ["product_id", "path", "label", "extra"]
_log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class MilvusConnection:
    """How to reach a Milvus server that has authentication and TLS on (Milvus Lite needs none of it).

    ``from_environment()`` reads the same variables in the CLI and the search service (the chart sets them
    from Secrets): ``MILVUS_TOKEN`` (``user:password`` or an API key), ``MILVUS_SERVER_PEM`` (the server's
    certificate, for TLS) with ``MILVUS_SERVER_NAME`` (the name it was issued to, when the URI's host is
    another), or ``MILVUS_CA_PEM``, ``MILVUS_CLIENT_PEM`` and ``MILVUS_CLIENT_KEY`` for mutual TLS.
    """

    token: str = ""
    server_pem_path: str = ""
    server_name: str = ""
    ca_pem_path: str = ""
    client_pem_path: str = ""
    client_key_path: str = ""

    ENVIRONMENT = {"token": "MILVUS_TOKEN", "server_pem_path": "MILVUS_SERVER_PEM",
                   "server_name": "MILVUS_SERVER_NAME", "ca_pem_path": "MILVUS_CA_PEM",
                   "client_pem_path": "MILVUS_CLIENT_PEM", "client_key_path": "MILVUS_CLIENT_KEY"}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> MilvusConnection:
        env = os.environ if environ is None else environ
        return cls(**{field: env.get(variable, "") for field, variable in cls.ENVIRONMENT.items()})

    @property
    def tls(self) -> bool:
        return bool(self.server_pem_path or self.ca_pem_path)

    def client_options(self) -> dict[str, object]:
        """Keyword arguments of ``pymilvus.MilvusClient`` (and its connection) for these settings."""
        options: dict[str, object] = {name: value for name, value in asdict(self).items() if value}
        options["token"] = self.token
        if self.tls:
            options["secure"] = True
        return options


def is_milvus_uri(location: str) -> bool:
    """``http(s)://...`` is a Milvus server; a path ending in ``.db`` is a Milvus Lite file."""
    return location.startswith(("http://", "https://", "tcp://")) or location.endswith(".db")


class MilvusStore:
    engine = "milvus"

    def __init__(self, uri: str, *, dimension: int | None = None, collection: str = DEFAULT_COLLECTION,
                 connection: MilvusConnection | None = None) -> None:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        self.location = f"{uri}#{collection}"
        self._collection = collection
        self._lite_path = None if uri.startswith(("http://", "https://", "tcp://")) else uri
        try:
            self._client = MilvusClient(uri=uri, **(connection or MilvusConnection()).client_options())
        except MilvusException as error:
            raise CatalogError(f"cannot open Milvus at {uri}: {error}") from error
        # pymilvus logs the Lite server's missing MVCC timestamps as warnings on every scan.
        logging.getLogger("pymilvus").setLevel(logging.ERROR)
        # A collection's vector field has a fixed width, so a new catalog opened without one is created by its
        # first write, with the width of those vectors; until then it reads as empty.
        self._exists = self._client.has_collection(collection)
        self._pending_metadata: dict[str, str] = {}
        if self._exists:
            catalog_width(self.location, self.metadata(), dimension)
            self._client.load_collection(collection)
        elif dimension is not None:
            self._create(dimension)

    def _create(self, dimension: int) -> None:
        from pymilvus import DataType, MilvusClient

        collection = self._collection
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
        schema.add_field("product_id", DataType.VARCHAR, max_length=1024)
        schema.add_field("path", DataType.VARCHAR, max_length=4096)
        schema.add_field("content_sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("label", DataType.VARCHAR, max_length=512)
        schema.add_field("extra", DataType.JSON)
        index_params = self._client.prepare_index_params()
        index_params.add_index(field_name="vector", index_type=INDEX_TYPE, metric_type="IP", params=INDEX_PARAMS)
        index_params.add_index(field_name="label", index_type="INVERTED")
        from pymilvus.exceptions import MilvusException

        def create() -> None:
            self._client.create_collection(collection, schema=schema, index_params=index_params,
                                           properties={f"{PROPERTY_PREFIX}dimension": str(dimension)})

        try:
            create()
        except MilvusException as error:
            stale = self._half_created_collection()
            if stale is None:
                raise CatalogError(f"cannot create {self.location}: {error}") from error
            _log.warning("%s: removing %s, a collection whose creation was interrupted", self.location, stale)
            shutil.rmtree(stale)
            create()
        self._exists = True
        if self._pending_metadata:
            self.set_metadata(self._pending_metadata)

    def _half_created_collection(self) -> Path | None:
        """Milvus Lite makes a collection's folder, then writes its schema into it: a process killed between the two
        (``kill -9`` during a catalog's first write) leaves a folder that Lite does not count as a collection and
        will not create again. It holds nothing (no schema, so no rows were ever written): the folder, or None.
        The layout is Milvus Lite's own (``<file>/collections/<name>/schema.json``)."""
        if self._lite_path is None:
            return None
        folder = Path(self._lite_path) / "collections" / self._collection
        return folder if folder.is_dir() and not (folder / "schema.json").exists() else None

    def metadata(self) -> dict[str, str]:
        if not self._exists:
            return dict(self._pending_metadata)
        properties = self._client.describe_collection(self._collection).get("properties", {})
        return {key.removeprefix(PROPERTY_PREFIX): value for key, value in properties.items()
                if key.startswith(PROPERTY_PREFIX)}

    def set_metadata(self, values: dict[str, str]) -> None:
        if not self._exists:
            self._pending_metadata.update(values)
            return
        self._client.alter_collection_properties(
            self._collection, properties={f"{PROPERTY_PREFIX}{key}": value for key, value in values.items()})

    def fingerprints(self) -> dict[str, str]:
        return {product.product_id: product.fingerprint
                for product in self._scan(MAIN_PHOTOS, [*_FIELDS, "content_sha256"], _product_of)}

    def photo_contents(self) -> set[str]:
        return set(self._scan("", ["content_sha256"], lambda row: row["content_sha256"]))

    def _scan(self, condition: str, fields: list[str], convert: Any) -> list[Any]:
        if not self._exists:
            return []
        iterator = self._client.query_iterator(self._collection, batch_size=_SCAN_BATCH, filter=condition,
                                               output_fields=fields)
        found: list[Any] = []
        try:
            while batch := iterator.next():
                found += [convert(row) for row in batch]
        finally:
            iterator.close()
        return found

    def upsert(self, products: Sequence[Product], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        photos = sum(len(product.photos) for product in products)
        if len(vectors) != photos:
            raise CatalogError(f"expected {photos} vectors, one a photo, got {len(vectors)}")
        rows, start = [], 0
        for p in products:
            rows += [{"key": photo_key(p.product_id, position), "vector": vectors[start + position].tolist(),
                      "product_id": p.product_id, "path": photo.path, "content_sha256": photo.content_sha256,
                      "label": p.label, "extra": _stored_extra(p, position)}
                     for position, photo in enumerate(p.photos)]
            start += len(p.photos)
        if rows and not self._exists:
            self._create(len(rows[0]["vector"]))
        if rows:
            # Photos the products no longer have go first: an upsert replaces only the keys it writes.
            written = {row["key"] for row in rows}
            self._delete_keys([key for key in self._photo_keys([p.product_id for p in products]) if key not in written])
            self._client.upsert(self._collection, rows)

    def remove(self, product_ids: Sequence[str]) -> int:
        if not product_ids or not self._exists:
            return 0
        held = self._client.query(self._collection, filter=f"product_id in {json.dumps(list(product_ids))}",
                                  output_fields=["key", "product_id"])
        self._delete_keys([row["key"] for row in held])
        return len({row["product_id"] for row in held})

    def _photo_keys(self, product_ids: Sequence[str]) -> list[int]:
        if not self._exists:
            return []
        rows = self._client.query(self._collection, filter=f"product_id in {json.dumps(list(product_ids))}",
                                  output_fields=["key"])
        return [row["key"] for row in rows]

    def _delete_keys(self, keys: list[int]) -> None:
        if keys:
            self._client.delete(self._collection, ids=keys)

    def content_in_use(self, content_sha256: str) -> bool:
        if not self._exists:
            return False
        found = self._client.query(self._collection, filter=f"content_sha256 == {json.dumps(content_sha256)}",
                                   output_fields=["key"], limit=1)
        return bool(found)

    def get(self, product_id: str) -> tuple[Product, np.ndarray] | None:
        if not self._exists:
            return None
        rows = self._client.query(self._collection, filter=f"product_id == {json.dumps(product_id)}",
                                  output_fields=[*_FIELDS, "content_sha256", "vector"])
        rows.sort(key=_position_of)
        if not rows or _position_of(rows[0]) != 0:
            return None
        return _product_of(rows[0]), np.asarray([row["vector"] for row in rows], dtype=np.float32)

    def page(self, *, after: str | None, limit: int) -> list[Product]:
        # Milvus has no ORDER BY: the ids after the cursor are scanned and the first `limit` kept, a pass over the
        # collection per page (a shop lists its catalog rarely; searches never pay for it).
        if not self._exists:
            return []
        condition = MAIN_PHOTOS if after is None else f"{MAIN_PHOTOS} and product_id > {json.dumps(after)}"
        iterator = self._client.query_iterator(self._collection, batch_size=_SCAN_BATCH, filter=condition,
                                               output_fields=[*_FIELDS, "content_sha256"])
        rows: list[dict] = []
        try:
            while batch := iterator.next():
                rows = heapq.nsmallest(limit, [*rows, *batch], key=lambda row: row["product_id"])
        finally:
            iterator.close()
        return [_product_of(row) for row in rows]

    def extra_columns(self) -> None:
        return None  # a JSON field has no schema to list; any column may be filtered on

    def search(self, queries: np.ndarray, *, k: int, labels: Sequence[str] | None,
               where: Sequence[Condition] = ()) -> list[list[SearchHit]]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if not self._exists:
            return [[] for _ in queries]
        # Milvus string literals escape like JSON strings, so json.dumps quotes labels, columns and values.
        conditions = [] if labels is None else [f"label in {json.dumps(list(labels))}"]
        conditions += [_expression(condition) for condition in where]
        results = self._client.search(
            self._collection, data=queries.tolist(), limit=k, output_fields=[*_FIELDS, "content_sha256"],
            filter=" and ".join(conditions), group_by_field="product_id",  # a product once, by its best photo
            # HNSW keeps ef candidates: fewer than k would cut the answer short (most visibly under a filter).
            search_params={"metric_type": "IP", "params": {**SEARCH_PARAMS, "ef": max(SEARCH_PARAMS["ef"], k)}},
        )
        return [[_hit(hit["entity"], float(hit["distance"])) for hit in hits] for hits in results]

    def count(self) -> int:
        if not self._exists:
            return 0
        rows = self._client.query(self._collection, filter=MAIN_PHOTOS, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def label_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        if not self._exists:
            return counts
        for label in self._scan(MAIN_PHOTOS, ["label"], lambda row: row["label"]):
            counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:20])

    def index_kind(self) -> str:
        return INDEX_TYPE.lower()

    def deleted_slots(self) -> int:
        return 0  # Milvus compacts deleted rows away itself

    def index_ready(self) -> bool:
        return True  # the collection is loaded on open; Milvus indexes new rows itself

    def prepare(self) -> None:
        pass

    def maintain(self) -> None:
        pass

    def flush(self) -> None:
        # Until flushed, new rows sit in growing segments that Milvus Lite searches by brute force
        # in Python (seconds per query at a few thousand rows); flushed, they are indexed.
        if self._exists:
            self._client.flush(self._collection)

    def close(self) -> None:
        self.flush()
        self._client.close()
        if self._lite_path is not None:
            # Milvus Lite serves the file from a thread of this process and locks it until released;
            # release it so other processes (the next indexer run) can open the catalog.
            from milvus_lite import server_manager_instance

            server_manager_instance.release_server(self._lite_path)


NUMBERS_KEY = "#numbers"
"""The key of the stored metadata JSON that holds its values that are numbers, as numbers: Milvus compares a JSON
string with a string only, so ``price<50`` reads ``extra["#numbers"]["price"]``. Never shown as metadata."""


PHOTO_KEY = "#photo"
"""The key of the stored metadata JSON that holds a photo's place among its product's, on photos other than the
main one only: a main photo's entity is as a catalog written before several photos held it."""
PHOTOS_KEY = "#photos"
"""The key that holds all of a product's photos, ``[path, sha256]`` each, on each of its entities when it has
several: a search hit names the others without a second query."""
MAIN_PHOTOS = f"not exists extra[{json.dumps(PHOTO_KEY)}]"
"""The filter of main photos' entities: one a product."""
_RESERVED = (NUMBERS_KEY, PHOTO_KEY, PHOTOS_KEY)


def _stored_extra(product: Product, position: int) -> dict[str, object]:
    numbers = {name: number for name, value in product.extra.items() if (number := as_number(value)) is not None}
    stored: dict[str, object] = {**product.extra, NUMBERS_KEY: numbers}
    if position:
        stored[PHOTO_KEY] = position
    if product.more_photos:
        stored[PHOTOS_KEY] = [[photo.path, photo.content_sha256] for photo in product.photos]
    return stored


def _extra_of(row: Mapping[str, Any]) -> dict[str, str]:
    return {name: value for name, value in (row.get("extra") or {}).items() if name not in _RESERVED}


def _position_of(row: Mapping[str, Any]) -> int:
    return int((row.get("extra") or {}).get(PHOTO_KEY, 0))


def _photos_of(row: Mapping[str, Any]) -> tuple[ProductPhoto, ...]:
    listed = (row.get("extra") or {}).get(PHOTOS_KEY)
    if not listed:
        return (ProductPhoto(row["path"], row["content_sha256"]),)
    return tuple(ProductPhoto(path, digest) for path, digest in listed)


def _product_of(row: Mapping[str, Any]) -> Product:
    """The product of its main photo's entity."""
    main, *more = _photos_of(row)
    return Product(product_id=row["product_id"], path=main.path, content_sha256=main.content_sha256,
                   label=row["label"], extra=_extra_of(row), more_photos=tuple(more))


def _hit(entity: Mapping[str, Any], score: float) -> SearchHit:
    photos = _photos_of(entity)
    return SearchHit(product_id=entity["product_id"], score=score, path=entity["path"], label=entity["label"],
                     extra=_extra_of(entity), photo=_position_of(entity), photos=photos)


def _expression(condition: Condition) -> str:
    """A Milvus boolean expression for one condition; every name and value quoted by json.dumps."""
    field = f"extra[{json.dumps(condition.column)}]"
    if condition.op == "exists":
        return f"exists {field}"
    if condition.op == "=":
        return f"{field} == {json.dumps(condition.values[0])}"
    if condition.op == "!=":
        return f"(exists {field} and {field} != {json.dumps(condition.values[0])})"
    if condition.op == "in":  # Milvus takes `in` on a field, not a JSON key: one equality a value
        return "(" + " or ".join(f"{field} == {json.dumps(value)}" for value in condition.values) + ")"
    return f"extra[{json.dumps(NUMBERS_KEY)}][{json.dumps(condition.column)}] {condition.op} {condition.number!r}"
