"""The catalog behind the service, off the event loop, in lanes that cannot stall each other.

* **reads** (search, similar, get, summary): a pool of threads, so searches run side by side;
* **writes** (put, delete): one thread, so writes are serialised; the embedded engine makes each one
  visible to the next search without a rebuild (see :mod:`shopvision.catalog.faiss_store`);
* **thumbnails** made on request (for photos indexed by the CLI; uploads get theirs at write time):
  one thread of their own, so a burst of them waits behind itself, not in front of searches;
* **upkeep**: a background thread loads the index, then every second lets the catalog rebuild and
  checkpoint it, and once removes photos no product references.

Each lane has a bounded queue and a wait limit: past them a request gets 503 with Retry-After
(:class:`CatalogBusyError`) instead of an unbounded wait. Readiness reads state kept here, never
waiting on catalog work.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from shopvision.api.photos import PhotoStore, ThumbnailCache, media_type
from shopvision.catalog import Catalog, CatalogStats, Product, ProductPhoto, SearchHit
from shopvision.catalog.catalog import model_mismatch
from shopvision.catalog.filters import Condition
from shopvision.catalog.milvus_store import MilvusConnection
from shopvision.errors import ShopvisionError
from shopvision.types import WeightsProvenance

T = TypeVar("T")
UPKEEP_INTERVAL_S = 1.0
IMAGE_LOOKUPS = 3
"""Lookups of a product for its image, when its photo was replaced (and removed) between lookup and read."""
_log = logging.getLogger(__name__)


class CatalogBusyError(ShopvisionError):
    """The catalog has more work queued than it takes, or this request waited too long for it (503)."""


@dataclass(frozen=True, kw_only=True)
class CatalogLimits:
    search_threads: int = 4
    """Catalog reads at once (searches release the GIL in FAISS and SQLite)."""
    queued: int = 64
    """Operations waiting or running per lane before further ones get 503."""
    wait_s: float = 10.0
    """How long a request waits for its operation before it gets 503 (a write that started is waited for)."""


class _Lane:
    """Threads with a bounded queue: ``run`` refuses past ``limit`` and gives up on what did not start in time."""

    def __init__(self, name: str, threads: int, limit: int, wait_s: float, *, finish_started: bool = False,
                 initializer: Callable[[], None] | None = None) -> None:
        self.name, self._limit, self._wait_s, self._finish_started = name, limit, wait_s, finish_started
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"catalog-{name}",
                                            initializer=initializer)
        self.pending = 0  # changed only on the event loop's thread

    async def run(self, call: Callable[[], T]) -> T:
        if self.pending >= self._limit:
            raise CatalogBusyError(f"the catalog has {self.pending} {self.name} waiting; try again shortly")
        self.pending += 1
        future = self._executor.submit(call)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self._wait_s)
        except TimeoutError:
            if future.cancel() or not self._finish_started:  # never started, or a read whose answer can go
                raise CatalogBusyError(f"{self.name} waited {self._wait_s:g} s for the catalog; try again "
                                       "shortly") from None
            return await asyncio.wrap_future(future)  # a write that started: its client learns how it ended
        finally:
            self.pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class CatalogAccess:
    def __init__(self, catalog: Catalog, photos: PhotoStore, *, limits: CatalogLimits, uploads_kept: bool) -> None:
        self._catalog, self._photos, self._uploads_kept = catalog, photos, uploads_kept
        self._reads = _Lane("reads", limits.search_threads, limits.queued, limits.wait_s,
                            initializer=_one_search_thread)
        self._writes = _Lane("writes", 1, limits.queued, limits.wait_s, finish_started=True)
        self._thumbnails = _Lane("thumbnails", 1, limits.queued, limits.wait_s)
        self._thumbnail_cache = ThumbnailCache()
        self._metadata = catalog.metadata()
        self._products = 0
        self._state = "loading the search index"
        self._stop = threading.Event()
        self._upkeep = threading.Thread(target=self._keep_up, name="catalog-upkeep", daemon=True)

    @classmethod
    async def open(cls, location: str, *, photos: Path | None, limits: CatalogLimits | None = None,
                   milvus: MilvusConnection | None = None, ef_search: int | None = None) -> CatalogAccess:
        """Open the catalog (its records, not yet its index: the upkeep thread loads that while the service
        answers probes, not ready until it is)."""
        catalog = await asyncio.to_thread(lambda: Catalog.open(location, milvus=milvus, ef_search=ef_search))
        access = cls(catalog, PhotoStore(photos), limits=limits or CatalogLimits(), uploads_kept=photos is not None)
        access._upkeep.start()
        return access

    # -- state, for readiness and metrics: never waits on catalog work -----------------------------

    @property
    def ready(self) -> bool:
        return self._state.startswith("open")

    @property
    def state(self) -> str:
        return self._state

    @property
    def products(self) -> int:
        return self._products

    def queued(self) -> dict[str, int]:
        return {lane.name: lane.pending for lane in (self._reads, self._writes, self._thumbnails)}

    def model_problem(self, served: WeightsProvenance) -> str | None:
        """Why this catalog's vectors and the served model's differ, from what the catalog recorded: for /readyz,
        which anyone who reaches the service may read, so it names neither the catalog's path nor Triton's URL."""
        mismatch = model_mismatch("the catalog", self._metadata, served, url="the server")
        return None if mismatch is None else str(mismatch)

    # -- reads ------------------------------------------------------------------------------------

    async def search(self, vector: np.ndarray, *, k: int, labels: Sequence[str] | None,
                     where: Sequence[Condition]) -> list[SearchHit]:
        return await self._reads.run(lambda: self._catalog.search(vector, k=k, labels=labels, where=where))

    async def similar(self, product_id: str, *, k: int, labels: Sequence[str] | None,
                      where: Sequence[Condition]) -> list[SearchHit] | None:
        return await self._reads.run(
            lambda: self._catalog.similar(product_id, k=k, labels=labels, where=where))

    async def get(self, product_id: str) -> Product | None:
        return await self._reads.run(lambda: self._catalog.get(product_id))

    async def extra_columns(self) -> frozenset[str] | None:
        return await self._reads.run(self._catalog.extra_columns)

    async def page(self, *, after: str | None, limit: int) -> list[Product]:
        return await self._reads.run(lambda: self._catalog.page(after=after, limit=limit))

    async def stats(self) -> CatalogStats:
        return await self._reads.run(self._catalog.stats)  # the engine caches its label counts per change

    async def image(self, product_id: str, *, size: int | None, photo: int = 0) -> tuple[str, bytes] | None:
        """A product's photo (``photo``: 0 its main one) or its JPEG thumbnail, with its media type; None when
        there is no such product or photo, or the photo cannot be served (PhotoStore.read_photo says when).

        A replace removes the old photo once no product uses it, which may fall between the product's lookup and
        the read: then the product is looked up again, so the answer is the old photo or the new, never an error.
        """
        product = await self.get(product_id)
        for _ in range(IMAGE_LOOKUPS):
            if product is None or photo >= len(product.photos):
                return None
            chosen = product.photos[photo]
            found = await (self._photo(chosen) if size is None else self.thumbnail(chosen, size=size))
            if found is not None:
                return media_type(found[:16]), found
            latest = await self.get(product_id)
            if latest is None or latest.fingerprint == product.fingerprint:
                return None  # no photo, not a photo replaced meanwhile
            product = latest
        return None

    async def _photo(self, photo: ProductPhoto) -> bytes | None:
        """The photo as indexed: by its sha256, never through a symlink (a photo is at most 8 MiB)."""
        return await asyncio.to_thread(self._photos.read_photo, photo.content_sha256, photo.path)

    async def thumbnail(self, photo: ProductPhoto, *, size: int) -> bytes | None:
        """The JPEG thumbnail: from memory, else its file (made at write time for uploads), else made once from
        the photo in its own lane (a photo indexed by the CLI), so a burst never holds up searches or writes."""
        digest = photo.content_sha256
        data = self._thumbnail_cache.get(digest, size)
        if data is None:
            data = await asyncio.to_thread(self._photos.read_thumbnail, digest, size)
            if data is None and photo.path:
                data = await self._thumbnails.run(lambda: self._photos.make_thumbnail(digest, photo.path, size))
            if data is not None:
                self._thumbnail_cache.put(digest, size, data)
        return data

    # -- writes -----------------------------------------------------------------------------------

    async def check_model(self, served: WeightsProvenance, *, url: str) -> None:
        """Refuse vectors of other weights; an empty catalog takes the served model's (a write, so in the lane)."""
        if "model_sha256" in self._metadata:
            if (problem := model_mismatch(self._catalog.location, self._metadata, served, url=url)) is not None:
                raise problem
            return
        await self._writes.run(lambda: self._check_model(served, url))

    async def put(self, product_id: str, photos: Sequence[tuple[bytes, np.ndarray]], *, label: str,
                  extra: Mapping[str, str]) -> tuple[Product, bool]:
        """Store the photos (the main one first; durably, thumbnails made), then the product; returns it, and
        whether it replaced one. A failure leaves the catalog as it was."""
        digests = [hashlib.sha256(data).hexdigest() for data, _ in photos]
        if self._uploads_kept:  # the slow part (thumbnails) outside the write lane
            for digest, (data, _) in zip(digests, photos, strict=True):
                await asyncio.to_thread(self._photos.store, digest, data)

        def put() -> tuple[Product, bool]:
            # Again in the write lane (cheap when the files exist): a delete committed since may have
            # removed the same photo as an orphan.
            stored = [ProductPhoto(self._photos.store(digest, data), digest)
                      for digest, (data, _) in zip(digests, photos, strict=True)]
            previous = self._catalog.get(product_id)
            product = Product(product_id=product_id, path=stored[0].path, content_sha256=digests[0], label=label,
                              extra=dict(extra), more_photos=tuple(stored[1:]))
            self._catalog.upsert([product], np.stack([vector for _, vector in photos]))
            if previous is not None:
                self._release_photos(previous)
            self._products = self._catalog.count()
            return product, previous is not None

        return await self._writes.run(put)

    async def update_metadata(self, product_id: str, changes: Mapping[str, str | None]) -> Product | None:
        """Merge metadata changes into a product, keeping its photo and vector; None when there is no such product."""
        return await self._writes.run(lambda: self._catalog.update_metadata(product_id, changes))

    async def remove(self, product_id: str) -> bool:
        def remove() -> bool:
            previous = self._catalog.get(product_id)
            if previous is None or not self._catalog.remove([product_id]):
                return False
            self._release_photos(previous)
            self._products = self._catalog.count()
            return True

        return await self._writes.run(remove)

    async def close(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._upkeep.join)
        for lane in (self._reads, self._writes, self._thumbnails):
            lane.close()
        await asyncio.to_thread(self._catalog.close)

    # -- internals ----------------------------------------------------------------------------------

    def _check_model(self, served: WeightsProvenance, url: str) -> None:
        self._catalog.check_model(served, url=url)
        self._metadata = self._catalog.metadata()

    def _release_photos(self, product: Product) -> None:
        """Remove a replaced or deleted product's photos that no product has now (on the write thread, so no
        write can take them up meanwhile)."""
        for photo in product.photos:
            if photo.content_sha256 and not self._catalog.content_in_use(photo.content_sha256):
                self._photos.remove(photo.content_sha256)

    def _keep_up(self) -> None:
        try:
            _one_search_thread()
            started = time.perf_counter()
            self._catalog.prepare()
            self._products = self._catalog.count()
            self._state = f"open, index ready in {time.perf_counter() - started:.1f} s"
            removed = self._photos.sweep(self._catalog.photo_contents())
            if removed:
                _log.info("removed %d photo files no product references", removed)
        except Exception as error:  # noqa: BLE001 - reported by /readyz, which keeps the pod out of service
            _log.exception("the catalog's index could not be loaded")  # the details, paths included, go to the log
            self._state = f"failed to load the search index ({type(error).__name__}; see the service's log)"
            return
        while not self._stop.wait(UPKEEP_INTERVAL_S):
            try:
                self._catalog.maintain()
            except Exception:  # noqa: BLE001 - upkeep retries next second; searches keep the last index
                _log.exception("catalog upkeep failed")


def _one_search_thread() -> None:
    """One query at a time gains nothing from FAISS's OpenMP threads, which next to Triton only wait for
    (and spin on) cores that ONNX Runtime's threads hold right after each inference. The setting is per
    calling thread, so every catalog thread makes it."""
    try:
        import faiss
    except ImportError:  # a Milvus catalog: no FAISS in this process
        return
    faiss.omp_set_num_threads(1)
