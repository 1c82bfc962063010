"""A shop's product feed as the catalog's source: read it, fetch its images, keep the catalog in step.

Needs the ``feeds`` extra for remote feeds and object stores (fsspec, s3fs; gcsfs for gs://) and for XML
(defusedxml).
"""

from shopvision.catalog.feeds.errors import FeedError
from shopvision.catalog.feeds.fetch import FetchedImage, FetchSettings, ImageCache, ImageFetcher, ImageFetchError
from shopvision.catalog.feeds.formats import FEED_FORMATS, FeedMapping, FeedRow, RowProblem, feed_format, read_rows
from shopvision.catalog.feeds.sync import (
    FEED_COLUMN,
    MISSING_POLICIES,
    OUT_OF_STOCK,
    SyncOptions,
    SyncReport,
    feed_name,
    sync_feed,
)

__all__ = [
    "FEED_COLUMN",
    "FEED_FORMATS",
    "MISSING_POLICIES",
    "OUT_OF_STOCK",
    "FeedError",
    "FeedMapping",
    "FeedRow",
    "FetchSettings",
    "FetchedImage",
    "ImageCache",
    "ImageFetchError",
    "ImageFetcher",
    "RowProblem",
    "SyncOptions",
    "SyncReport",
    "feed_format",
    "feed_name",
    "read_rows",
    "sync_feed",
]
