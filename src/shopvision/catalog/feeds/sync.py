"""Keep a catalog in step with a product feed: ``shopvision index sync FEED``.

One pass over the feed, streamed: rows are read as they arrive, their images fetched ahead by a pool of threads
(so that fetching overlaps the model's inference), and every batch of :data:`~shopvision.catalog.BUILD_BATCH`
products is embedded and committed as one write. What decides the work on a row:

* the bytes of its images (``image_link``, then each ``additional_image_link``) differ from what the catalog holds:
  embed and store them, as one product of several photos;
* only the row's attributes differ (its image links among them: the same bytes moved to other URLs): store
  the new metadata with the vectors the catalog holds;
* nothing differs: nothing is written. The image was still asked for, conditionally: a 304 costs no bytes.

A sync owns the products it wrote, marked with the metadata column ``feed``: a product that left the feed is
removed (or marked out of stock, or kept) only when it is the same feed's, and only after the whole feed was read.
An interrupted sync (Ctrl-C, a crash) keeps every batch it committed; the next run skips those, fetching only
revalidations, so it resumes where the last one stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from shopvision._files import cache_dir
from shopvision.catalog._model import CATEGORY_COLUMN, Photo, Product, ProductPhoto, photos_fingerprint
from shopvision.catalog.catalog import BUILD_BATCH
from shopvision.catalog.feeds.errors import FeedError
from shopvision.catalog.feeds.fetch import FetchedImage, FetchSettings, ImageCache, ImageFetcher, ImageFetchError
from shopvision.catalog.feeds.formats import (
    AVAILABILITY,
    IMAGE_LINK,
    FeedMapping,
    FeedRow,
    RowProblem,
    feed_format,
    read_rows,
)
from shopvision.catalog.feeds.sources import open_feed, scheme_of
from shopvision.catalog.feeds.state import SyncState, metadata_digest
from shopvision.contract import MAX_PRODUCT_PHOTOS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from shopvision.catalog._model import Photo as _Photo


class SyncTarget(Protocol):
    """What a sync writes to: a :class:`~shopvision.catalog.Catalog` (the catalog's files or Milvus, directly), or
    :class:`~shopvision.catalog.feeds.service.ServiceCatalog` (the search service, through its API)."""

    def page(self, *, after: str | None = None, limit: int = 100) -> list[Product]: ...

    def index_photos(self, photos: Sequence[_Photo], *, categories: int | None = None
                     ) -> tuple[list[Product], list[tuple[str, str]]]: ...

    def rewrite_metadata(self, products: Sequence[Product]) -> list[Product]: ...

    def patch_metadata(self, patches: Mapping[str, Mapping[str, str | None]]) -> list[Product]: ...

    def remove(self, product_ids: Sequence[str]) -> int: ...

    def flush(self) -> None: ...

FEED_COLUMN: Final = "feed"
"""The metadata column that names the feed a product came from: a sync removes or marks only its own products."""
OUT_OF_STOCK: Final = "out_of_stock"
"""``availability`` of a product that left the feed, with ``--missing mark-unavailable`` (Google's value)."""
MISSING_POLICIES: Final = ("remove", "mark-unavailable", "keep")
REMOVAL_BATCH: Final = 1000
"""Products that left the feed removed or marked in one write."""


@dataclass(frozen=True)
class SyncOptions:
    name: str | None = None
    """The feed's name in the catalog (metadata ``feed``); by default its URL without credentials or query, or
    its absolute path. Give one when the feed's URL changes (signed URLs) but it is the same feed."""
    format: str | None = None
    mapping: FeedMapping = field(default_factory=FeedMapping)
    missing: str = "remove"
    """What happens to this feed's products that are no longer in it: ``remove``, ``mark-unavailable``, ``keep``."""
    fetch: FetchSettings = field(default_factory=FetchSettings)
    cache: Path | None = None
    """Where fetched images and their validators are kept; by default under ~/.cache/shopvision/feeds."""
    batch_size: int = BUILD_BATCH
    """Products embedded and committed together, as a build's: a crash loses at most this many."""


@dataclass
class SyncReport:
    feed: str
    rows: int = 0
    """Rows read, good and bad."""
    added: int = 0
    reembedded: int = 0
    """Products whose image changed, embedded again."""
    metadata_updated: int = 0
    """Products whose metadata alone changed: stored with the vector held, nothing embedded."""
    unchanged: int = 0
    removed: int = 0
    marked_unavailable: int = 0
    fetched: int = 0
    """Images whose bytes came over the network."""
    not_modified: int = 0
    """Images the server (or object store) said had not changed since the cache got them."""
    bytes_fetched: int = 0
    failed: list[RowProblem] = field(default_factory=list)
    complete: bool = False
    """Whether the whole feed was read (only then are products that left it removed)."""
    elapsed_s: float = 0.0
    feed_read: float | None = None
    """The share of the feed read so far, when its size is known."""

    @property
    def embedded(self) -> int:
        return self.added + self.reembedded

    def as_dict(self) -> dict[str, Any]:
        """The machine summary ``index sync --json`` prints."""
        summary = dataclasses.asdict(self)
        summary.pop("feed_read")
        summary["embedded"] = self.embedded
        summary["failed"] = [dataclasses.asdict(problem) for problem in self.failed]
        summary["elapsed_s"] = round(self.elapsed_s, 3)
        return summary


def feed_name(location: str) -> str:
    """A feed's default name: a URL without user, password, query or fragment, or a file's absolute path."""
    if not scheme_of(location):
        return str(Path(location).resolve())
    scheme, rest = location.split("://", 1)
    rest = rest.split("#", 1)[0].split("?", 1)[0]
    authority, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{authority.rsplit('@', 1)[-1]}{slash}{path}"


def default_cache(name: str) -> Path:
    return cache_dir("feeds", hashlib.sha256(name.encode()).hexdigest()[:16])


def sync_feed(catalog: SyncTarget, location: str, options: SyncOptions | None = None, *,
              progress: Callable[[SyncReport], None] | None = None) -> SyncReport:
    """Bring ``catalog`` in step with the feed at ``location`` (a path or an http(s)://, s3:// or gs:// URL).

    Raises :class:`FeedError` when the feed cannot be read at all; a bad row or image is reported in the
    result's ``failed`` and the rest is indexed. ``progress`` is called with the report as it grows.
    """
    options = options or SyncOptions()
    if options.missing not in MISSING_POLICIES:
        raise FeedError(f"missing must be one of {', '.join(MISSING_POLICIES)}, not {options.missing!r}")
    name = options.name or feed_name(location)
    cache = ImageCache(options.cache or default_cache(name))
    state = SyncState(cache.directory, unavailable=OUT_OF_STOCK)
    try:
        report = _sync(catalog, location, name, options, cache, state, progress)
        if report.complete:
            cache.retain(state)
        return report
    finally:
        state.close()


def _sync(catalog: SyncTarget, location: str, name: str, options: SyncOptions, cache: ImageCache, state: SyncState,
          progress: Callable[[SyncReport], None] | None) -> SyncReport:
    run = _Sync(catalog, name, options, state, progress)
    with open_feed(location) as feed, ImageFetcher(cache, options.fetch) as fetcher:
        rows = read_rows(feed.stream, feed_format(location, options.format), options.mapping)
        pool = ThreadPoolExecutor(options.fetch.concurrency, thread_name_prefix="feed-fetch")
        try:
            batch: list[tuple[FeedRow | RowProblem, list[Future[FetchedImage]]]] = []
            for item in _fetch_ahead(rows, fetcher, pool, lookahead=2 * options.batch_size):
                batch.append(item)
                if len(batch) >= options.batch_size:
                    run.apply(batch, feed_read=feed.position() / feed.size if feed.size else None)
                    batch = []
            run.apply(batch, feed_read=1.0)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    run.finish()
    return run.report


def photo_urls(row: FeedRow) -> list[str]:
    """The row's images a product takes: ``image_link``, then its ``additional_image_link`` up to the contract's
    photos a product (Google Merchant Center's own limit); the catalog indexes no more."""
    return [row.image_url, *row.additional_image_urls][:MAX_PRODUCT_PHOTOS]


def _fetch_ahead(rows: Iterator[FeedRow | RowProblem], fetcher: ImageFetcher, pool: ThreadPoolExecutor, *,
                 lookahead: int) -> Iterator[tuple[FeedRow | RowProblem, list[Future[FetchedImage]]]]:
    """Rows in feed order with their images' fetches under way: up to ``lookahead`` rows ahead of the consumer,
    so that the pool fetches while the consumer waits for the model, and memory stays that of the window."""
    window: deque[tuple[FeedRow | RowProblem, list[Future[FetchedImage]]]] = deque()
    for row in rows:
        fetches = [pool.submit(fetcher.fetch, url) for url in photo_urls(row)] if isinstance(row, FeedRow) else []
        window.append((row, fetches))
        if len(window) > lookahead:
            yield window.popleft()
    yield from window


class _Sync:
    """One sync: the feed's products as the catalog held them and what was seen (in ``state``, on disk), the
    report."""

    def __init__(self, catalog: SyncTarget, name: str, options: SyncOptions, state: SyncState,
                 progress: Callable[[SyncReport], None] | None) -> None:
        self.catalog = catalog
        self.name = name
        self.options = options
        self.progress = progress
        self.report = SyncReport(feed=name)
        self.started = time.monotonic()
        self.state = state
        _hold_products_of_feed(catalog, name, state)
        self.valid_rows = 0

    def apply(self, batch: list[tuple[FeedRow | RowProblem, list[Future[FetchedImage]]]], *,
              feed_read: float | None) -> None:
        photos: dict[str, tuple[FeedRow, list[Photo]]] = {}
        rewrites: list[Product] = []
        for row, fetches in batch:
            self.report.rows += 1
            if isinstance(row, RowProblem):
                self.report.failed.append(row)
                continue
            self.valid_rows += 1
            self.state.see(row.product_id)  # a row whose image fails keeps its product: a flaky CDN removes nothing
            images = self._images(row, fetches)
            if images is None:
                continue
            held = self.state.get(row.product_id)
            extra = {**row.metadata, IMAGE_LINK: row.image_url, FEED_COLUMN: self.name}
            fingerprint = photos_fingerprint([image.content_sha256 for _, image in images])
            if held is not None and held.fingerprint == fingerprint:  # the same photos: no embedding
                if held.category is not None and CATEGORY_COLUMN not in extra:
                    extra[CATEGORY_COLUMN] = held.category  # the categories head's, given at embedding
                if held.metadata == metadata_digest(extra):  # which holds the image links: moved photos differ
                    self.report.unchanged += 1
                else:
                    moved = [ProductPhoto(url, image.content_sha256) for url, image in images]
                    rewrites.append(Product(product_id=row.product_id, path=moved[0].path,
                                            content_sha256=moved[0].content_sha256, label=held.label, extra=extra,
                                            more_photos=tuple(moved[1:])))
            else:
                photos[row.product_id] = (row, [Photo(row.product_id, url, image.read(), extra)
                                                for url, image in images])
        self._store(photos, rewrites)
        self.report.feed_read = feed_read
        self._report()

    def _images(self, row: FeedRow, fetches: list[Future[FetchedImage]]) -> list[tuple[str, FetchedImage]] | None:
        """The row's images that came, with their URLs; None when its main image did not (the row is reported,
        and the catalog keeps what it held). An additional image that fails is reported and left out."""
        images: list[tuple[str, FetchedImage]] = []
        for url, fetch in zip(photo_urls(row), fetches, strict=True):
            self.state.keep_url(ImageCache.entry_name(url))
            try:
                image = fetch.result()
            except ImageFetchError as error:
                self.report.failed.append(RowProblem(row.row, error.reason, row.product_id, url))
                if not images:  # the main image: the product's label and first photo
                    return None
                continue
            if image.transferred:
                self.report.fetched += 1
                self.report.bytes_fetched += image.size
            else:
                self.report.not_modified += 1
            images.append((url, image))
        return images

    def finish(self) -> None:
        """After the whole feed was read: what left it is removed or marked, by the options."""
        self.report.complete = True
        # A feed of no good rows is far likelier a broken export than a shop that sells nothing.
        if self.valid_rows and self.options.missing != "keep":
            marking = self.options.missing == "mark-unavailable"
            for gone in _chunks(self.state.unseen(available_only=marking), REMOVAL_BATCH):
                if marking:
                    patched = self.catalog.patch_metadata({product_id: {AVAILABILITY: OUT_OF_STOCK}
                                                           for product_id in gone})
                    self.report.marked_unavailable += len(patched)
                else:
                    self.report.removed += self.catalog.remove(gone)
        self._done()

    def _store(self, photos: dict[str, tuple[FeedRow, list[Photo]]], rewrites: list[Product]) -> None:
        if rewrites:
            written = self.catalog.rewrite_metadata(rewrites)
            self.state.hold(written, seen=True)
            self.report.metadata_updated += len(written)
        stored, failed = self.catalog.index_photos([photo for _, group in photos.values() for photo in group])
        for product_id, reason in failed:
            row, group = photos[product_id]
            self.report.failed.append(RowProblem(row.row, reason, product_id, group[0].source))
        for product in stored:
            if self.state.get(product.product_id) is not None:
                self.report.reembedded += 1
            else:
                self.report.added += 1
        self.state.hold(stored, seen=True)

    def _done(self) -> None:
        self.catalog.flush()
        self._report()

    def _report(self) -> None:
        self.report.elapsed_s = time.monotonic() - self.started
        if self.progress is not None:
            self.progress(self.report)


def _hold_products_of_feed(catalog: SyncTarget, name: str, state: SyncState) -> None:
    """Record the catalog's products that came from this feed, read a page at a time."""
    after: str | None = None
    while page := catalog.page(after=after, limit=1000):
        state.hold((product for product in page if product.extra.get(FEED_COLUMN) == name), seen=False)
        after = page[-1].product_id


def _chunks(values: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
