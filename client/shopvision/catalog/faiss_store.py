"""The embedded engine: FAISS for search, SQLite as the durable record of products and vectors.

SQLite is the source of truth: every batch of products and vectors is one transaction, so a
crash or Ctrl-C loses at most the batch in flight. The FAISS index is derived from it and saved
as ``vectors-<generation>.faiss``, named after the SQLite generation it reflects and renamed into
place only when complete; when no file matches the current generation on open (a crash between
the two), the index is rebuilt from SQLite.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shopvision.catalog._model import Product, SearchHit, product_key
from shopvision.catalog._store import CatalogError, catalog_width

DATABASE_FILE = "catalog.sqlite"
INDEX_FILE = "vectors-{generation}.faiss"
SCHEMA_VERSION = "1"

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
INDEX_KINDS = ("auto", "exact", "hnsw")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    key INTEGER PRIMARY KEY,
    product_id TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    label TEXT NOT NULL,
    extra TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS products_by_label ON products(label);
CREATE TABLE IF NOT EXISTS metadata (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class FaissStore:
    """Products in ``PATH/catalog.sqlite``, their search index in ``PATH/vectors.faiss``."""

    engine = "faiss"

    def __init__(self, directory: str | Path, *, dimension: int | None = None, index: str = "auto",
                 hnsw_threshold: int = HNSW_THRESHOLD) -> None:
        import faiss

        if index not in INDEX_KINDS:
            raise CatalogError(f"index must be one of {', '.join(INDEX_KINDS)}, not {index!r}")
        self._faiss: Any = faiss  # its generated stubs lack the HNSW search parameters
        self._directory = Path(directory)
        self.location = str(self._directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._requested_kind = index
        self._hnsw_threshold = hnsw_threshold
        self._closed = False
        self._db = sqlite3.connect(self._directory / DATABASE_FILE, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        stored = self.metadata()
        if stored.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise CatalogError(f"{self.location}: catalog schema {stored['schema_version']}, "
                               f"this version reads {SCHEMA_VERSION}")
        self._dimension = catalog_width(self.location, stored, dimension)
        self.set_metadata({"schema_version": SCHEMA_VERSION,
                           **({} if self._dimension is None else {"dimension": str(self._dimension)})})
        self._index, self._saved_generation = self._load_index()
        self._index_generation = self._saved_generation
        self._columns: tuple[int, frozenset[str]] | None = None
        self._count: tuple[int, int] | None = None

    # -- records ---------------------------------------------------------------------------------

    def metadata(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT name, value FROM metadata").fetchall())

    def set_metadata(self, values: dict[str, str]) -> None:
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO metadata VALUES (?, ?)", values.items())

    def fingerprints(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT product_id, content_sha256 FROM products").fetchall())

    def upsert(self, products: Sequence[Product], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self._dimension is None and vectors.ndim == 2:  # a new catalog takes the width of its first vectors
            self._dimension = int(vectors.shape[1])
            self.set_metadata({"dimension": str(self._dimension)})
        if vectors.shape != (len(products), self._dimension):
            raise CatalogError(f"expected vectors of shape ({len(products)}, {self._dimension}), got {vectors.shape}")
        keys = np.array([product.key for product in products], dtype=np.int64)
        index = self._current_index(for_write=True)
        with self._transaction():
            replaced = self._existing_keys(keys)
            self._db.executemany(
                "INSERT OR REPLACE INTO products VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(int(key), p.product_id, p.path, p.content_sha256, p.label, json.dumps(p.extra), vector.tobytes())
                 for key, p, vector in zip(keys, products, vectors, strict=True)],
            )
            generation = self._bump_generation()
        self._index_remove(replaced)
        if self._index is index:
            index.add_with_ids(vectors, keys)
            self._index_generation = generation

    def remove(self, product_ids: Sequence[str]) -> int:
        keys = np.array([product_key(pid) for pid in product_ids], dtype=np.int64)
        self._current_index(for_write=True)
        with self._transaction():
            existing = self._existing_keys(keys)
            self._db.executemany("DELETE FROM products WHERE key = ?", [(int(key),) for key in existing])
            generation = self._bump_generation() if len(existing) else self._generation()
        self._index_remove(existing)
        if self._index is not None:
            self._index_generation = generation
        return len(existing)

    def get(self, product_id: str) -> tuple[Product, np.ndarray] | None:
        row = self._db.execute("SELECT product_id, path, content_sha256, label, extra, vector FROM products "
                               "WHERE key = ? AND product_id = ?", (product_key(product_id), product_id)).fetchone()
        if row is None:
            return None
        stored_id, path, content_sha256, label, extra, vector = row
        product = Product(product_id=stored_id, path=path, content_sha256=content_sha256, label=label,
                          extra=json.loads(extra))
        return product, np.frombuffer(vector, dtype=np.float32).copy()

    def extra_columns(self) -> frozenset[str]:
        generation = self._generation()
        if self._columns is None or self._columns[0] != generation:
            rows = self._db.execute("SELECT DISTINCT json_each.key FROM products, json_each(products.extra)")
            self._columns = (generation, frozenset(key for (key,) in rows))
        return self._columns[1]

    def count(self) -> int:
        # COUNT(*) scans the whole table (vectors included): once per change of the catalog, not per search.
        generation = self._generation()
        if self._count is None or self._count[0] != generation:
            self._count = (generation, self._db.execute("SELECT COUNT(*) FROM products").fetchone()[0])
        return self._count[1]

    def label_counts(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT label, COUNT(*) AS n FROM products GROUP BY label ORDER BY n DESC, label LIMIT 20")
        return dict(rows.fetchall())

    # -- search ----------------------------------------------------------------------------------

    def index_kind(self) -> str:
        if self._requested_kind != "auto":
            return self._requested_kind
        return "hnsw" if self.count() >= self._hnsw_threshold else "exact"

    def search(self, queries: np.ndarray, *, k: int, labels: Sequence[str] | None,
               where: Mapping[str, str] | None = None) -> list[list[SearchHit]]:
        index = self._current_index()
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if index is None:
            return [[] for _ in queries]
        if queries.shape[1] != self._dimension:
            raise CatalogError(f"{self.location} holds {self._dimension}-d vectors; the query is {queries.shape[1]}-d")
        allowed = None if labels is None and not where else self._allowed_keys(labels, where or {})
        if index.ntotal == 0 or (allowed is not None and not len(allowed)):
            return [[] for _ in queries]
        scores, keys = index.search(queries, min(k, index.ntotal), params=self._search_parameters(allowed))
        rows = self._rows_by_key({int(key) for key in keys.ravel() if key >= 0})
        return [[self._hit(rows[int(key)], float(score))
                 for score, key in zip(score_row, key_row, strict=True) if int(key) in rows]
                for score_row, key_row in zip(scores, keys, strict=True)]

    def flush(self) -> None:
        if self._dimension is not None and self._saved_generation != self._generation():
            self._save_index(self._current_index())

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._db.close()
        self._closed = True

    # -- internals -------------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _generation(self) -> int:
        row = self._db.execute("SELECT value FROM metadata WHERE name = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def _bump_generation(self) -> int:
        generation = self._generation() + 1
        self._db.execute("INSERT OR REPLACE INTO metadata VALUES ('generation', ?)", (str(generation),))
        return generation

    def _existing_keys(self, keys: np.ndarray) -> np.ndarray:
        found = [int(key) for key in keys
                 if self._db.execute("SELECT 1 FROM products WHERE key = ?", (int(key),)).fetchone()]
        return np.array(found, dtype=np.int64)

    def _rows_by_key(self, keys: set[int]) -> dict[int, tuple]:
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = self._db.execute(
            f"SELECT key, product_id, path, label, extra FROM products WHERE key IN ({marks})", list(keys))
        return {row[0]: row for row in rows}

    @staticmethod
    def _hit(row: tuple, score: float) -> SearchHit:
        _, product_id, path, label, extra = row
        return SearchHit(product_id=product_id, score=score, path=path, label=label, extra=json.loads(extra))

    def _allowed_keys(self, labels: Sequence[str] | None, where: Mapping[str, str]) -> np.ndarray:
        # Every value is a bound parameter: labels, column names and values are data, never SQL.
        queries, parameters = [], []
        if labels is not None:
            queries.append(f"SELECT key FROM products WHERE label IN ({','.join('?' * len(labels))})")
            parameters += list(labels)
        for column, value in where.items():
            queries.append("SELECT products.key FROM products, json_each(products.extra) "
                           "WHERE json_each.key = ? AND json_each.value = ?")
            parameters += [column, value]
        rows = self._db.execute(" INTERSECT ".join(queries), parameters)
        return np.array([key for (key,) in rows], dtype=np.int64)

    def _search_parameters(self, allowed: np.ndarray | None):
        selector = None if allowed is None else self._faiss.IDSelectorBatch(allowed)
        if self._is_hnsw():
            return self._faiss.SearchParametersHNSW(sel=selector, efSearch=HNSW_EF_SEARCH)
        return None if selector is None else self._faiss.SearchParameters(sel=selector)

    def _is_hnsw(self) -> bool:
        return self._index is not None and "HNSW" in type(self._faiss.downcast_index(self._index.index)).__name__

    def _index_remove(self, keys: np.ndarray) -> None:
        """Drop keys already deleted from SQLite; call after ``_current_index()`` made the index."""
        if not len(keys):
            return
        if self._is_hnsw():
            self._index = None  # HNSW graphs cannot delete; rebuilt from SQLite on next use
        else:
            self._index.remove_ids(keys)

    def _current_index(self, *, for_write: bool = False) -> Any:
        """The index to search, or (``for_write``) one that holds every stored vector, to update in place.

        When another process (``shopvision index build``) changed the catalog, searches switch to the
        index it saved once it has saved one, and meanwhile keep the last complete one; a write first
        rebuilds from SQLite, so that it never updates an index that lacks the other process's rows.
        """
        if self._dimension is None:
            return None  # nothing was ever stored: the first write gives the catalog its width
        generation = self._generation()
        if self._index is not None and self._index_generation != generation:
            saved, saved_generation = self._load_index()
            if saved is not None:
                self._index, self._saved_generation, self._index_generation = saved, saved_generation, generation
            elif for_write:
                self._index = None
        wanted_hnsw = self.index_kind() == "hnsw"
        if self._index is None or self._is_hnsw() != wanted_hnsw:
            self._index = self._build_index(wanted_hnsw)
            self._index_generation = generation
        return self._index

    def _build_index(self, hnsw: bool):
        faiss = self._faiss
        if hnsw:
            inner = faiss.IndexHNSWFlat(self._dimension, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        else:
            inner = faiss.IndexFlatIP(self._dimension)
        index = faiss.IndexIDMap2(inner)
        for keys, vectors in self._stored_vectors():
            index.add_with_ids(vectors, keys)
        return index

    def _stored_vectors(self, batch: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        cursor = self._db.execute("SELECT key, vector FROM products ORDER BY key")
        while rows := cursor.fetchmany(batch):
            keys = np.array([row[0] for row in rows], dtype=np.int64)
            vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), -1)
            yield keys, vectors

    def _index_path(self, generation: int) -> Path:
        return self._directory / INDEX_FILE.format(generation=generation)

    def _load_index(self) -> tuple[Any, int]:
        generation = self._generation()
        path = self._index_path(generation)
        if not path.exists():
            return None, -1  # missing or written before the last committed change: rebuilt on first use
        return self._faiss.read_index(str(path)), generation

    def _save_index(self, index: Any) -> None:
        generation = self._generation()
        path = self._index_path(generation)
        partial = path.with_name(path.name + ".partial")
        self._faiss.write_index(index, str(partial))  # streamed: no second in-memory copy of a large index
        with partial.open("rb") as stream:
            os.fsync(stream.fileno())
        os.replace(partial, path)
        for stale in self._directory.glob(INDEX_FILE.format(generation="*")):
            if stale != path:
                stale.unlink(missing_ok=True)
        self._saved_generation = generation


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception (Ctrl-C included)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, error_type: type[BaseException] | None, *rest: object) -> None:
        self._db.execute("ROLLBACK" if error_type else "COMMIT")
