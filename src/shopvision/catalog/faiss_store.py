"""The embedded engine: FAISS for search, SQLite as the durable record of products and vectors.

SQLite is the source of truth: every batch of products and vectors is one transaction, so a
crash or Ctrl-C loses at most the batch in flight, and an acknowledged write is on disk.

A product has one vector a photo: its main photo's in ``products``, its others' in ``product_photos``. A search
walks photos and answers products, each once, scored by its best photo.

The FAISS index is derived from it and changes in place, never rebuilt in a request:
* every stored vector (a photo's) has a *slot*, a number never reused; the index holds vectors by slot;
* a write adds the new vector under a new slot and marks the slot it replaced (or deleted) as
  deleted; searches skip deleted slots through a FAISS ID selector (HNSW graphs cannot remove a
  node, and keep routing through it, so recall holds);
* when deleted slots pass a tenth of the index (or the index should change kind), :meth:`maintain`
  builds a new index in the background while searches use the old one, and swaps it in;
* :meth:`maintain` also checkpoints the index (``vectors-<generation>.faiss``, renamed into place
  only when complete). Opening loads the newest checkpoint and *catches up* from SQLite: slots it
  lacks are added, slots no longer stored are marked deleted. A crash costs the writes since the
  last checkpoint, not a rebuild.

Threads: searches run concurrently (one SQLite connection per thread; FAISS searches release the
GIL); writes are serialised, and only a write's commit and its index change exclude searches, so a
search sees a product before or after a write, never half of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shopvision._files import fsync_directory
from shopvision.catalog._locks import ReadWriteLock
from shopvision.catalog._model import Product, ProductPhoto, SearchHit, photos_fingerprint, product_key
from shopvision.catalog._store import CatalogError, catalog_width
from shopvision.catalog.filters import COMPARISONS, Condition, as_number

DATABASE_FILE = "catalog.sqlite"
INDEX_FILE = "vectors-{generation}.faiss"
SCHEMA_VERSION = "4"
"""2: vectors have slots, metadata columns are an indexed table; 3: metadata values that are numbers are indexed as
numbers too (comparisons); 4: a product's other photos (``product_photos``). Older catalogs are migrated on open."""

HNSW_THRESHOLD = 20_000
"""From this many products on, ``index="auto"`` searches an HNSW graph instead of exact search.

Exact search of one query costs time in proportion to the catalog (benchmarks/results/catalog: under
1 ms per 1,000 2048-d vectors on 2 cores), so at 20k it reaches what a web request should spend on it;
HNSW stays near constant with recall@10 close to exact search, and builds several times slower, which
small catalogs skip. The reports (catalog, catalog-1m) hold the figures.
"""
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
"""Candidates an HNSW search keeps (``Catalog.open(ef_search=)``, SHOPVISION_CATALOG_EF_SEARCH): more is closer
to exact search and slower. benchmarks/results/catalog-live measures the trade on hard clustered data."""
INDEX_KINDS = ("auto", "exact", "hnsw")

FILTERED_EXACT_MAX = 4096
"""A filtered HNSW search whose filter leaves at most this many products scores them all instead (exact, a few
milliseconds): a graph walk that must skip 99 % of the nodes it meets runs out of candidates before it finds k."""
REBUILD_DELETED_FRACTION = 0.1
"""Rebuild (in the background) once this share of the index's slots is deleted: deleted slots still cost
search time and memory, and an HNSW graph's recall falls when many of its nodes are only waypoints."""
REBUILD_MIN_DELETED = 1000
CHECKPOINT_WRITES = 1000
"""Checkpoint the index after this many written products (a restart then adds at most this many)..."""
CHECKPOINT_INTERVAL_S = 60.0
"""...or this long after the first write since the last checkpoint."""
_SQL_BATCH = 900  # bound parameters per statement, under SQLite's oldest limit (999)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    key INTEGER PRIMARY KEY,
    product_id TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    label TEXT NOT NULL,
    extra TEXT NOT NULL,
    vector BLOB NOT NULL,
    slot INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS product_fields (
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    key INTEGER NOT NULL,
    PRIMARY KEY (name, value, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS product_numbers (
    name TEXT NOT NULL,
    number REAL NOT NULL,
    key INTEGER NOT NULL,
    PRIMARY KEY (name, number, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS product_photos (
    key INTEGER NOT NULL,
    position INTEGER NOT NULL,
    path TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    vector BLOB NOT NULL,
    slot INTEGER NOT NULL UNIQUE,
    PRIMARY KEY (key, position)
);
CREATE TABLE IF NOT EXISTS metadata (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS products_by_label ON products(label);
CREATE INDEX IF NOT EXISTS products_by_content ON products(content_sha256);
CREATE UNIQUE INDEX IF NOT EXISTS products_by_slot ON products(slot);
CREATE INDEX IF NOT EXISTS product_fields_by_key ON product_fields(key);
CREATE INDEX IF NOT EXISTS product_numbers_by_key ON product_numbers(key);
CREATE INDEX IF NOT EXISTS product_photos_by_content ON product_photos(content_sha256);
"""
_log = logging.getLogger(__name__)
_FIELD_TESTS: dict[str, Callable[[Condition], tuple[str, str, list[object]]]] = {
    "=": lambda c: ("product_fields", " AND value = ?", [c.values[0]]),
    "!=": lambda c: ("product_fields", " AND value != ?", [c.values[0]]),
    "in": lambda c: ("product_fields", f" AND value IN ({_marks(c.values)})", list(c.values)),
    "exists": lambda c: ("product_fields", "", []),
    **{op: (lambda c: ("product_numbers", f" AND number {c.op} ?", [c.number])) for op in COMPARISONS},
}
"""Each operator as (table, condition on it, its parameters): SQL only from this table, never from a request."""


class FaissStore:
    """Products in ``PATH/catalog.sqlite``, their search index checkpointed in ``PATH/vectors-*.faiss``."""

    engine = "faiss"

    def __init__(self, directory: str | Path, *, dimension: int | None = None, index: str = "auto",
                 hnsw_threshold: int = HNSW_THRESHOLD, rebuild_min_deleted: int = REBUILD_MIN_DELETED,
                 ef_search: int = HNSW_EF_SEARCH) -> None:
        import faiss

        if index not in INDEX_KINDS:
            raise CatalogError(f"index must be one of {', '.join(INDEX_KINDS)}, not {index!r}")
        if ef_search < 1:
            raise CatalogError(f"ef_search must be at least 1, not {ef_search}")
        self.ef_search = ef_search
        self._faiss: Any = faiss  # its generated stubs lack the HNSW search parameters
        self._directory = Path(directory)
        self.location = str(self._directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._requested_kind = index
        self._hnsw_threshold = hnsw_threshold
        self._rebuild_min_deleted = rebuild_min_deleted
        self._closed = False
        self._connections: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._write_mutex = threading.RLock()
        """Held by writes, checkpoints and index swaps: one at a time, and never by searches."""
        self._lock = ReadWriteLock()
        """Searches read the index and SQLite together; a write's commit and index change exclude them."""
        self._db = self._connect()
        """The writing connection, used under ``_write_mutex``."""
        self._open_schema()
        stored = self.metadata()
        self._dimension = catalog_width(self.location, stored, dimension)
        if self._dimension is not None and "dimension" not in stored:
            self.set_metadata({"dimension": str(self._dimension)})
        self._index: Any = None
        self._deleted: set[int] = set()
        self._mask: tuple[Any, ...] = ()
        self._generation = -1
        """The SQLite generation the index reflects."""
        self._saved_generation = -1
        self._unsaved_writes = 0
        self._first_unsaved_at: float | None = None
        self._count: int | None = None
        self._columns: set[str] | None = None
        self._label_counts: tuple[int, dict[str, int]] | None = None

    # -- records ---------------------------------------------------------------------------------

    def metadata(self) -> dict[str, str]:
        return dict(self._reader().execute("SELECT name, value FROM metadata").fetchall())

    def set_metadata(self, values: dict[str, str]) -> None:
        with self._write_mutex, self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO metadata VALUES (?, ?)", values.items())

    def fingerprints(self) -> dict[str, str]:
        db = self._reader()
        main = dict(db.execute("SELECT key, content_sha256 FROM products").fetchall())
        more: dict[int, list[str]] = {}
        for key, digest in db.execute("SELECT key, content_sha256 FROM product_photos ORDER BY key, position"):
            more.setdefault(key, []).append(digest)
        return {product_id: photos_fingerprint([main[key], *more.get(key, ())])
                for key, product_id in db.execute("SELECT key, product_id FROM products")}

    def photo_contents(self) -> set[str]:
        return {digest for (digest,) in self._reader().execute(
            "SELECT content_sha256 FROM products UNION SELECT content_sha256 FROM product_photos")}

    def content_in_use(self, content_sha256: str) -> bool:
        """Whether any product's photo has these bytes (whether a stored photo file may go)."""
        found = self._reader().execute(
            "SELECT 1 FROM products WHERE content_sha256 = ? UNION ALL "
            "SELECT 1 FROM product_photos WHERE content_sha256 = ? LIMIT 1", (content_sha256, content_sha256))
        return found.fetchone() is not None

    def upsert(self, products: Sequence[Product], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._write_mutex:
            if self._dimension is None and vectors.ndim == 2:  # a new catalog takes the width of its first vectors
                self._dimension = int(vectors.shape[1])
                self.set_metadata({"dimension": str(self._dimension)})
            photos = sum(len(product.photos) for product in products)
            if vectors.shape != (photos, self._dimension):
                raise CatalogError(f"expected vectors of shape ({photos}, {self._dimension}): one a photo, "
                                   f"got {vectors.shape}")
            if not len(products):
                return
            self._prepare_locked()
            keys = [product.key for product in products]
            with self._lock.writing():
                with self._transaction():
                    replaced = self._slots_of(keys)
                    first = int(self._metadata_value("next_slot", "0"))
                    slots = np.arange(first, first + photos, dtype=np.int64)
                    starts = np.cumsum([0, *(len(product.photos) for product in products)])[:-1].tolist()
                    self._db.executemany(
                        "INSERT OR REPLACE INTO products VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [(key, p.product_id, p.path, p.content_sha256, p.label, json.dumps(p.extra),
                          vectors[start].tobytes(), int(slots[start]))
                         for key, p, start in zip(keys, products, starts, strict=True)])
                    self._delete_dependents(keys)
                    self._db.executemany(
                        "INSERT INTO product_photos VALUES (?, ?, ?, ?, ?, ?)",
                        [(key, position, photo.path, photo.content_sha256, vectors[start + position].tobytes(),
                          int(slots[start + position]))
                         for key, p, start in zip(keys, products, starts, strict=True)
                         for position, photo in enumerate(p.photos) if position])
                    self._db.executemany("INSERT INTO product_fields VALUES (?, ?, ?)",
                                         [(name, value, key) for key, p in zip(keys, products, strict=True)
                                          for name, value in p.extra.items()])
                    self._db.executemany("INSERT INTO product_numbers VALUES (?, ?, ?)",
                                         [(name, number, key) for key, p in zip(keys, products, strict=True)
                                          for name, value in p.extra.items()
                                          if (number := as_number(value)) is not None])
                    self._set_metadata_value("next_slot", str(first + photos))
                    generation = self._bump_generation()
                self._index.add_with_ids(vectors, slots)
                self._forget_slots(slot for held in replaced.values() for slot in held)
                self._generation = generation
                if self._count is not None:
                    self._count += len(products) - len(replaced)
                if self._columns is not None:
                    self._columns.update(name for product in products for name in product.extra)
            self._written(len(products))

    def remove(self, product_ids: Sequence[str]) -> int:
        keys = [product_key(pid) for pid in product_ids]
        with self._write_mutex:
            self._prepare_locked()
            with self._lock.writing():
                with self._transaction():
                    existing = self._slots_of(keys)
                    for batch in _batches(list(existing)):
                        self._db.execute(f"DELETE FROM products WHERE key IN ({_marks(batch)})", batch)
                    self._delete_dependents(list(existing))
                    generation = self._bump_generation() if existing else self._generation
                self._forget_slots(slot for held in existing.values() for slot in held)
                self._generation = generation
                if self._count is not None:
                    self._count -= len(existing)
            self._written(len(existing))
        return len(existing)

    def get(self, product_id: str) -> tuple[Product, np.ndarray] | None:
        db = self._reader()
        key = product_key(product_id)
        found = self._products(db, "key = ? AND product_id = ?", [key, product_id])
        if not found:
            return None
        vectors = [row[0] for row in db.execute(
            "SELECT vector FROM products WHERE key = ? UNION ALL "
            "SELECT vector FROM (SELECT vector FROM product_photos WHERE key = ? ORDER BY position)", (key, key))]
        return found[0], np.frombuffer(b"".join(vectors), dtype=np.float32).reshape(len(vectors), -1).copy()

    def page(self, *, after: str | None, limit: int) -> list[Product]:
        return self._products(self._reader(), "product_id > ? ORDER BY product_id LIMIT ?",
                              ["" if after is None else after, limit])

    def _products(self, db: sqlite3.Connection, condition: str, parameters: Sequence[object]) -> list[Product]:
        """The products whose rows meet ``condition`` (SQL of this module's own, values bound), with their photos."""
        rows = db.execute(f"SELECT key, product_id, path, content_sha256, label, extra FROM products WHERE {condition}",
                          parameters).fetchall()
        more: dict[int, list[ProductPhoto]] = {}
        for batch in _batches([row[0] for row in rows]):
            for key, path, digest in db.execute(f"SELECT key, path, content_sha256 FROM product_photos WHERE key IN "
                                                f"({_marks(batch)}) ORDER BY key, position", batch):
                more.setdefault(key, []).append(ProductPhoto(path, digest))
        return [Product(product_id=product_id, path=path, content_sha256=digest, label=label, extra=json.loads(extra),
                        more_photos=tuple(more.get(key, ()))) for key, product_id, path, digest, label, extra in rows]

    def extra_columns(self) -> frozenset[str]:
        """Metadata columns seen since opening (a column whose last product went stays listed until reopened)."""
        self._follow_other_writers()
        if self._columns is None:
            rows = self._reader().execute("SELECT DISTINCT name FROM product_fields")
            self._columns = {name for (name,) in rows}
        return frozenset(self._columns)

    def count(self) -> int:
        self._follow_other_writers()
        if self._count is None:
            self._count = self._reader().execute("SELECT COUNT(*) FROM products").fetchone()[0]
        return self._count

    def label_counts(self) -> dict[str, int]:
        self._follow_other_writers()
        cached = self._label_counts
        if cached is None or cached[0] != self._generation:
            rows = self._reader().execute(
                "SELECT label, COUNT(*) AS n FROM products GROUP BY label ORDER BY n DESC, label LIMIT 20")
            cached = self._label_counts = (self._generation, dict(rows.fetchall()))
        return dict(cached[1])

    # -- search ----------------------------------------------------------------------------------

    def index_kind(self) -> str:
        """How searches run now: ``exact`` or ``hnsw`` (what :meth:`maintain` or :meth:`flush` moves to)."""
        if self._index is not None:
            return self._kind_of(self._index)
        return self._wanted_kind()

    def index_ready(self) -> bool:
        """Whether searches can run without first loading or building the index."""
        return self._index is not None or self._dimension is None

    def search(self, queries: np.ndarray, *, k: int, labels: Sequence[str] | None,
               where: Sequence[Condition] = ()) -> list[list[SearchHit]]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self._dimension is None:
            return [[] for _ in queries]
        if queries.shape[1] != self._dimension:
            raise CatalogError(f"{self.location} holds {self._dimension}-d vectors; the query is {queries.shape[1]}-d")
        self.prepare()
        self._follow_other_writers()
        products = max(1, self.count())
        db = self._reader()
        with self._lock.reading():
            index = self._index
            allowed = None if labels is None and not where else self._allowed_slots(db, labels, where)
            photos = index.ntotal - len(self._deleted) if allowed is None else len(allowed)
            if photos <= 0:
                return [[] for _ in queries]
            # Photos are searched and products answered: the best n photos name at least k products once n is
            # k times the photos a product has, or when every photo was searched. Most catalogs hold one or a few
            # photos a product, so the first round, at the average, nearly always does.
            n = min(photos, k * -(-photos // products))
            while True:
                scores, slots = self._best_photos(db, index, queries, allowed, n)
                places = self._places_of(db, {int(slot) for slot in slots.ravel() if slot >= 0})
                found = [_group(score_row, slot_row, places, k) for score_row, slot_row in zip(scores, slots,
                                                                                               strict=True)]
                if n >= photos or min(len(best) for best in found) >= k:
                    break
                n = min(photos, 2 * n)
            chosen = [product for batch in _batches(list({key for best in found for _, key, _ in best}))
                      for product in self._products(db, f"key IN ({_marks(batch)})", batch)]
        by_key = {product.key: product for product in chosen}
        return [[_hit(by_key[key], position, score) for score, key, position in best if key in by_key]
                for best in found]

    def _best_photos(self, db: sqlite3.Connection, index: Any, queries: np.ndarray, allowed: np.ndarray | None,
                     n: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and slots of the ``n`` best photos a query (-1 past the end), of the allowed slots only if given."""
        hnsw = self._kind_of(index) == "hnsw"
        if allowed is not None and hnsw and len(allowed) <= FILTERED_EXACT_MAX:
            return self._score_all(db, index, queries, allowed, n)
        parameters, _selectors = self._search_parameters(allowed)
        scores, slots = index.search(queries, min(n, index.ntotal), params=parameters)
        wanted = min(n, index.ntotal if allowed is None else len(allowed))
        if allowed is not None and hnsw and (slots >= 0).sum(axis=1).min() < wanted:
            return self._score_all(db, index, queries, allowed, n)  # the walk came up short
        return scores, slots

    def _score_all(self, db: sqlite3.Connection, index: Any, queries: np.ndarray, allowed: np.ndarray,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the allowed slots only, a batch of vectors at a time (memory stays one batch's)."""
        best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        best_slots = np.full((len(queries), 0), -1, dtype=np.int64)
        for batch in np.array_split(allowed, max(1, -(-len(allowed) // FILTERED_EXACT_MAX))):
            try:
                vectors = index.reconstruct_batch(batch)
                found = batch
            except RuntimeError:  # a slot the index has not caught up with: SQLite holds every vector
                found, vectors = next(self._vectors_of(db, batch, batch=len(batch)), (batch[:0], None))
                if vectors is None:
                    continue
            scores = np.concatenate([best_scores, queries @ vectors.T], axis=1)
            slots = np.concatenate([best_slots, np.broadcast_to(found, (len(queries), len(found)))], axis=1)
            keep = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            best_scores, best_slots = np.take_along_axis(scores, keep, 1), np.take_along_axis(slots, keep, 1)
        return best_scores, best_slots

    # -- upkeep ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Load the index now (newest checkpoint + what SQLite holds beyond it, or a full build without one)."""
        if self._index is None and self._dimension is not None:
            with self._write_mutex:
                self._prepare_locked()

    def maintain(self) -> None:
        """Background upkeep for a long-running process (the search service calls it every second):
        follow other processes' writes, rebuild when deletions or the catalog's size call for it (searches
        keep the old index meanwhile), checkpoint after ``CHECKPOINT_WRITES`` writes or ``CHECKPOINT_INTERVAL_S``."""
        if self._dimension is None:
            return
        self.prepare()
        self._follow_other_writers(wait=True)
        if self._needs_rebuild():
            self._rebuild()
        unsaved_for = 0.0 if self._first_unsaved_at is None else time.monotonic() - self._first_unsaved_at
        if self._unsaved_writes >= CHECKPOINT_WRITES or unsaved_for >= CHECKPOINT_INTERVAL_S:
            self.checkpoint()

    def checkpoint(self) -> bool:
        """Save the index if it changed since the last save. Writes wait meanwhile; searches do not."""
        with self._write_mutex:
            if self._index is None or self._saved_generation == self._generation:
                return False
            self._save_index(self._index, self._generation)
            return True

    def deleted_slots(self) -> int:
        """Vectors the index still holds for products replaced or deleted since its last build."""
        return len(self._deleted)

    def flush(self) -> None:
        """Rebuild the index if it is due (searches wait: this is a bulk load's or a shutdown's end, and the old
        index goes first, so that a million vectors are never held twice), then checkpoint it."""
        if self._dimension is None:
            return
        self.prepare()
        if self._needs_rebuild():
            with self._write_mutex:
                with self._lock.writing():  # not reentrant: released before _install takes it again
                    self._index = None
                self._prepare_locked()
        self.checkpoint()

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        for connection in self._connections:
            connection.close()

    # -- internals: SQLite -----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._directory / DATABASE_FILE, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=30000")
        self._connections.append(connection)
        return connection

    def _reader(self) -> sqlite3.Connection:
        """This thread's connection: SQLite connections are not for concurrent use, and WAL lets many read."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
        return connection

    def _open_schema(self) -> None:
        with self._write_mutex:
            version = None
            if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'metadata'").fetchone():
                row = self._db.execute("SELECT value FROM metadata WHERE name = 'schema_version'").fetchone()
                version = row[0] if row else None
            if version not in (None, "1", "2", SCHEMA_VERSION):
                raise CatalogError(f"{self.location}: catalog schema {version}, this version reads {SCHEMA_VERSION}")
            with self._transaction():
                if version == "1":
                    self._migrate_from_version_1()
                # One statement at a time: executescript() would commit the transaction first.
                for statement in filter(str.strip, (_SCHEMA + _INDEXES).split(";")):
                    self._db.execute(statement)
                if version in ("1", "2"):  # index the numbers among the values already stored
                    self._db.create_function("as_number", 1, as_number, deterministic=True)
                    self._db.execute("INSERT INTO product_numbers SELECT name, as_number(value), key FROM "
                                     "product_fields WHERE as_number(value) IS NOT NULL")
                self._set_metadata_value("schema_version", SCHEMA_VERSION)

    def _migrate_from_version_1(self) -> None:
        """Version 1 keyed index vectors by product and kept metadata only as JSON: give every product a
        slot, index its metadata, and drop the old index files (their ids were product keys)."""
        self._db.execute("ALTER TABLE products ADD COLUMN slot INTEGER NOT NULL DEFAULT -1")
        keys = [key for (key,) in self._db.execute("SELECT key FROM products ORDER BY key")]
        self._db.executemany("UPDATE products SET slot = ? WHERE key = ?",
                             [(slot, key) for slot, key in enumerate(keys)])
        self._db.execute("""CREATE TABLE product_fields (name TEXT NOT NULL, value TEXT NOT NULL, key INTEGER NOT NULL,
                            PRIMARY KEY (name, value, key)) WITHOUT ROWID""")
        self._db.execute("INSERT INTO product_fields SELECT json_each.key, json_each.value, products.key "
                         "FROM products, json_each(products.extra)")
        self._set_metadata_value("next_slot", str(len(keys)))
        for stale in self._directory.glob(INDEX_FILE.format(generation="*")):
            stale.unlink()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _metadata_value(self, name: str, default: str) -> str:
        row = self._db.execute("SELECT value FROM metadata WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

    def _set_metadata_value(self, name: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO metadata VALUES (?, ?)", (name, value))

    def _stored_generation(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM metadata WHERE name = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def _bump_generation(self) -> int:
        generation = self._stored_generation(self._db) + 1
        self._set_metadata_value("generation", str(generation))
        return generation

    def _slots_of(self, keys: Sequence[int]) -> dict[int, list[int]]:
        """The slots of each of these products that is stored (one a photo), by key."""
        found: dict[int, list[int]] = {}
        for batch in _batches(list(keys), _SQL_BATCH // 2):
            for key, slot in self._db.execute(
                    f"SELECT key, slot FROM products WHERE key IN ({_marks(batch)}) UNION ALL "
                    f"SELECT key, slot FROM product_photos WHERE key IN ({_marks(batch)})", batch * 2):
                found.setdefault(key, []).append(slot)
        return found

    def _delete_dependents(self, keys: Sequence[int]) -> None:
        """Delete what these products have besides their row: metadata index entries, and other photos."""
        for batch in _batches(list(keys)):
            for table in ("product_fields", "product_numbers", "product_photos"):
                self._db.execute(f"DELETE FROM {table} WHERE key IN ({_marks(batch)})", batch)

    @staticmethod
    def _places_of(db: sqlite3.Connection, slots: set[int]) -> dict[int, tuple[int, int]]:
        """(product key, photo position) of each of these slots that is stored."""
        places: dict[int, tuple[int, int]] = {}
        for batch in _batches(list(slots), _SQL_BATCH // 2):
            for slot, key, position in db.execute(
                    f"SELECT slot, key, 0 FROM products WHERE slot IN ({_marks(batch)}) UNION ALL "
                    f"SELECT slot, key, position FROM product_photos WHERE slot IN ({_marks(batch)})", batch * 2):
                places[slot] = (key, position)
        return places

    @staticmethod
    def _allowed_slots(db: sqlite3.Connection, labels: Sequence[str] | None,
                       where: Sequence[Condition]) -> np.ndarray:
        # Every value is a bound parameter: labels, column names and values are data, never SQL. Each condition
        # is an index lookup (labels; (name, value) of product_fields; (name, number) of product_numbers), not a
        # scan of every product's JSON.
        # The products that pass are found first, then all of their photos' slots.
        queries: list[str] = []
        parameters: list[object] = []
        if labels is not None:
            queries.append(f"SELECT key FROM products WHERE label IN ({_marks(labels)})")
            parameters += list(labels)
        for condition in where:
            table, test, values = _FIELD_TESTS[condition.op](condition)
            queries.append(f"SELECT key FROM {table} WHERE name = ?{test}")
            parameters += [condition.column, *values]
        rows = db.execute(f"WITH passing(key) AS ({' INTERSECT '.join(queries)}) "
                          "SELECT slot FROM products WHERE key IN passing UNION ALL "
                          "SELECT slot FROM product_photos WHERE key IN passing", parameters)
        return np.array([slot for (slot,) in rows], dtype=np.int64)

    def _live_slots(self) -> np.ndarray:
        return np.array([slot for (slot,) in self._db.execute(
            "SELECT slot FROM products UNION ALL SELECT slot FROM product_photos ORDER BY slot")], dtype=np.int64)

    def _vectors_of(self, db: sqlite3.Connection, slots: Iterable[int] | None = None,
                    batch: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(slots, vectors) of these stored slots (all of them when None), in batches."""
        if slots is None:
            cursor = db.execute("SELECT slot, vector FROM products UNION ALL "
                                "SELECT slot, vector FROM product_photos ORDER BY slot")
            chunks: Iterator[list] = iter(lambda: cursor.fetchmany(batch), [])
        else:
            chunks = (db.execute(f"SELECT slot, vector FROM products WHERE slot IN ({_marks(part)}) UNION ALL "
                                 f"SELECT slot, vector FROM product_photos WHERE slot IN ({_marks(part)})",
                                 part * 2).fetchall()
                      for part in _batches([int(slot) for slot in slots], _SQL_BATCH // 2))
        for rows in chunks:
            if rows:
                found = np.array([row[0] for row in rows], dtype=np.int64)
                yield found, np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), -1)

    # -- internals: the index --------------------------------------------------------------------

    def _wanted_kind(self) -> str:
        if self._requested_kind != "auto":
            return self._requested_kind
        return "hnsw" if self.count() >= self._hnsw_threshold else "exact"

    def _kind_of(self, index: Any) -> str:
        return "hnsw" if "HNSW" in type(self._faiss.downcast_index(index.index)).__name__ else "exact"

    def _search_parameters(self, allowed: np.ndarray | None) -> tuple[Any, tuple[Any, ...]]:
        """FAISS parameters, and the selectors they point to (kept alive by the caller until the search ends)."""
        faiss = self._faiss
        selectors: tuple[Any, ...] = (faiss.IDSelectorBatch(allowed),) if allowed is not None else self._mask
        selector = selectors[0] if selectors else None
        if self._kind_of(self._index) == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=self.ef_search), selectors
        return (None if selector is None else faiss.SearchParameters(sel=selector)), selectors

    def _forget_slots(self, slots: Iterable[int]) -> None:
        """Mark slots deleted (their products were replaced or removed); call holding the writing lock."""
        before = len(self._deleted)
        self._deleted.update(slots)
        if len(self._deleted) != before:
            batch = self._faiss.IDSelectorBatch(np.fromiter(self._deleted, dtype=np.int64))
            self._mask = (self._faiss.IDSelectorNot(batch), batch)

    def _written(self, products: int) -> None:
        if products:
            self._unsaved_writes += products
            if self._first_unsaved_at is None:
                self._first_unsaved_at = time.monotonic()

    def _needs_rebuild(self) -> bool:
        if self._index is None:
            return False
        deleted_limit = max(self._rebuild_min_deleted, REBUILD_DELETED_FRACTION * self._index.ntotal)
        return len(self._deleted) >= deleted_limit or self._kind_of(self._index) != self._wanted_kind()

    def _prepare_locked(self) -> None:
        if self._index is not None or self._dimension is None:
            return
        index = self._load_checkpoint()
        if index is None:
            index = self._build_index(self._wanted_kind() == "hnsw")
        self._install(index)

    def _rebuild(self) -> None:
        """A fresh index from SQLite, built without holding anything (searches and writes go on), then caught
        up with the writes made meanwhile and swapped in, and checkpointed."""
        started = time.perf_counter()
        index = self._build_index(self._wanted_kind() == "hnsw", db=self._reader())
        with self._write_mutex:
            self._install(index)
            self._save_index(index, self._generation)
        _log.info("%s: index rebuilt (%s, %d vectors) in %.1f s", self.location, self._kind_of(index), index.ntotal,
                  time.perf_counter() - started)

    def _install(self, index: Any) -> None:
        """Bring ``index`` to what SQLite holds now and make it the one searches use. Holds the write mutex, so
        nothing commits meanwhile; the index in use only changes under the writing lock."""
        generation = self._stored_generation(self._db)
        live = self._live_slots()
        held = self._faiss.vector_to_array(index.id_map).astype(np.int64)
        missing = np.setdiff1d(live, held, assume_unique=True)
        stale = np.setdiff1d(held, live, assume_unique=True)
        in_use = index is self._index
        with self._lock.writing() if in_use else contextlib.nullcontext():
            for slots, vectors in self._vectors_of(self._db, missing):
                index.add_with_ids(vectors, slots)
        with self._lock.writing():
            self._index = index
            self._deleted = set()
            self._mask = ()
            self._forget_slots(stale.tolist())
            self._generation = generation
            self._count = None  # counted again when asked: live slots are photos, not products

    def _follow_other_writers(self, *, wait: bool = False) -> None:
        """Another process (``shopvision index build``) committed to the catalog: catch the index up. A search
        does it only when no write holds the catalog (else it searches the last complete index)."""
        if self._index is None or self._stored_generation(self._reader()) == self._generation:
            return
        if not self._write_mutex.acquire(blocking=wait):
            return
        try:
            if self._stored_generation(self._db) != self._generation:
                self._install(self._index)
                self._columns = None
                self._label_counts = None
        finally:
            self._write_mutex.release()

    def _build_index(self, hnsw: bool, *, db: sqlite3.Connection | None = None) -> Any:
        faiss = self._faiss
        if hnsw:
            inner = faiss.IndexHNSWFlat(self._dimension, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        else:
            inner = faiss.IndexFlatIP(self._dimension)
        index = faiss.IndexIDMap2(inner)
        for slots, vectors in self._vectors_of(db or self._db):
            index.add_with_ids(vectors, slots)
        return index

    def _index_path(self, generation: int) -> Path:
        return self._directory / INDEX_FILE.format(generation=generation)

    def _load_checkpoint(self) -> Any:
        """The newest saved index (to be caught up), or None when there is none or it cannot be read."""
        saved = sorted(self._directory.glob(INDEX_FILE.format(generation="*")),
                       key=lambda path: int(path.stem.removeprefix("vectors-")), reverse=True)
        for path in saved:
            try:
                index = self._faiss.read_index(str(path))
            except RuntimeError as error:
                _log.warning("%s: cannot read %s (%s); rebuilding from SQLite", self.location, path.name, error)
                continue
            if index.d == self._dimension and hasattr(index, "id_map"):
                self._saved_generation = int(path.stem.removeprefix("vectors-"))
                return index
        return None

    def _save_index(self, index: Any, generation: int) -> None:
        path = self._index_path(generation)
        partial = path.with_name(path.name + ".partial")
        self._faiss.write_index(index, str(partial))  # streamed: no second in-memory copy of a large index
        with partial.open("rb") as stream:
            os.fsync(stream.fileno())
        os.replace(partial, path)
        fsync_directory(self._directory)
        for stale in self._directory.glob(INDEX_FILE.format(generation="*")):
            if stale != path:
                stale.unlink(missing_ok=True)
        self._saved_generation = generation
        self._unsaved_writes = 0
        self._first_unsaved_at = None


def _group(scores: np.ndarray, slots: np.ndarray, places: dict[int, tuple[int, int]],
           k: int) -> list[tuple[float, int, int]]:
    """(score, product key, photo position) of the first k products among photos ranked best first."""
    best: dict[int, tuple[float, int, int]] = {}
    for score, slot in zip(scores.tolist(), slots.tolist(), strict=True):
        place = places.get(slot)
        if place is not None and place[0] not in best:
            best[place[0]] = (score, *place)
            if len(best) == k:
                break
    return list(best.values())


def _hit(product: Product, position: int, score: float) -> SearchHit:
    photos = product.photos
    return SearchHit(product_id=product.product_id, score=score, path=photos[position].path, label=product.label,
                     extra=product.extra, photo=position, photos=photos)


def _batches(values: list, size: int = _SQL_BATCH) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))




class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception (Ctrl-C included)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, error_type: type[BaseException] | None, *rest: object) -> None:
        self._db.execute("ROLLBACK" if error_type else "COMMIT")
