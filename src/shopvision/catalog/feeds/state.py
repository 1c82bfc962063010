"""What a sync knows of a feed's products while it runs, in a SQLite file beside the image cache, not in memory.

A sync compares every row with the product the catalog holds, removes what left the feed at the end, and tells
the image cache which URLs to keep: three things that grow with the feed. Held in memory they cost kilobytes a
row (a million rows: gigabytes); here a product costs a row of a table on disk, and the sync's memory stays that
of its batches. Only digests are kept: a rewrite is built from the row, and the catalog supplies the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from shopvision.catalog._model import CATEGORY_COLUMN, Product
from shopvision.catalog.feeds.formats import AVAILABILITY

_SCHEMA = """
CREATE TABLE held (
    product_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    metadata BLOB NOT NULL,
    label TEXT NOT NULL,
    category TEXT,
    unavailable INTEGER NOT NULL,
    seen INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE kept_urls (entry TEXT PRIMARY KEY) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class HeldProduct:
    """What the sync compares a row with: digests of the product's photos and metadata, and what a rewrite keeps."""

    fingerprint: str
    """``Product.fingerprint``: its photos' bytes, in order."""
    metadata: bytes
    """:func:`metadata_digest` of its metadata."""
    label: str
    category: str | None
    """Its ``category`` column: the categories head's, given when it was embedded, which a rewrite keeps."""


def metadata_digest(extra: Mapping[str, str]) -> bytes:
    return hashlib.blake2b(json.dumps(extra, sort_keys=True).encode(), digest_size=16).digest()


class SyncState:
    """The feed's products the catalog holds (whether the feed still has them), and the image URLs it uses."""

    def __init__(self, directory: Path, *, unavailable: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=directory, prefix=".sync-state-", suffix=".sqlite")
        os.close(handle)
        self.path = Path(name)
        self._unavailable = unavailable
        # A scratch file of one run: nothing here needs to survive a crash, so nothing is synced to disk.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)

    def hold(self, products: Iterable[Product], *, seen: bool) -> None:
        """Record products as the catalog holds them now (after a read, or after the sync wrote them)."""
        self._db.executemany(
            "INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(product.product_id, product.fingerprint, metadata_digest(product.extra), product.label,
              product.extra.get(CATEGORY_COLUMN), int(product.extra.get(AVAILABILITY) == self._unavailable),
              int(seen)) for product in products])

    def get(self, product_id: str) -> HeldProduct | None:
        row = self._db.execute("SELECT fingerprint, metadata, label, category FROM held WHERE product_id = ?",
                               (product_id,)).fetchone()
        return None if row is None else HeldProduct(*row)

    def see(self, product_id: str) -> None:
        """The feed still has this product (whatever becomes of its row)."""
        self._db.execute("UPDATE held SET seen = 1 WHERE product_id = ?", (product_id,))

    def unseen(self, *, available_only: bool = False) -> Iterator[str]:
        """The held products the feed no longer has, in product-id order (``available_only``: not yet marked)."""
        condition = " AND NOT unavailable" if available_only else ""
        cursor = self._db.execute(f"SELECT product_id FROM held WHERE NOT seen{condition} ORDER BY product_id")
        for (product_id,) in cursor:
            yield product_id

    def keep_url(self, entry: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO kept_urls VALUES (?)", (entry,))

    def __contains__(self, entry: object) -> bool:
        """Whether the image cache's entry (its file name) is one of a URL the feed uses."""
        return self._db.execute("SELECT 1 FROM kept_urls WHERE entry = ?", (entry,)).fetchone() is not None

    def close(self) -> None:
        self._db.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
