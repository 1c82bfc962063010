"""Open a feed where it lives: a local file, or an http(s)://, s3:// or gs:// URL through fsspec."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shopvision.catalog.feeds.errors import FeedError

REMOTE_SCHEMES = ("http", "https", "s3", "gs")
_PACKAGES = {"http": "aiohttp", "https": "aiohttp", "s3": "s3fs", "gs": "gcsfs"}


def scheme_of(location: str) -> str:
    return location.split("://", 1)[0].lower() if "://" in location else ""


def object_store(url: str) -> tuple[Any, str]:
    """The fsspec filesystem and path of a remote URL; s3:// takes the usual AWS settings (AWS_PROFILE,
    AWS_ENDPOINT_URL, ...), gs:// Google's application default credentials."""
    scheme = scheme_of(url)
    try:
        import fsspec

        filesystem, path = fsspec.core.url_to_fs(url)
    except ImportError as error:
        raise FeedError(f"{scheme}:// needs fsspec and {_PACKAGES.get(scheme, 'its filesystem package')}: "
                        f"pip install 'shopvision[feeds]'" + (" gcsfs" if scheme == "gs" else "")) from error
    return filesystem, path


@dataclass(frozen=True)
class OpenFeed:
    stream: IO[bytes]
    """The feed's bytes, gunzipped when its name ends in .gz."""
    size: int | None
    """Its size as stored, when known."""
    position: Callable[[], int]
    """How far into the stored bytes reading has come: with ``size``, the share of the feed read (an ETA)."""


@contextlib.contextmanager
def open_feed(location: str) -> Iterator[OpenFeed]:
    """Open a feed for reading as a stream: it is never loaded whole."""
    scheme = scheme_of(location)
    if scheme and scheme not in REMOTE_SCHEMES:
        raise FeedError(f"{location}: a feed is a local path or an {', '.join(REMOTE_SCHEMES)} URL")
    compressed = location.split("?", 1)[0].lower().endswith(".gz")
    try:
        if not scheme:
            path = Path(location)
            size: int | None = path.stat().st_size
            raw: IO[bytes] = path.open("rb")
        else:
            filesystem, remote = object_store(location)
            size = (filesystem.info(remote) or {}).get("size")
            raw = filesystem.open(remote, "rb")
    except FeedError:
        raise
    except (OSError, ValueError) as error:
        raise FeedError(f"{location}: cannot open the feed: {error}") from error
    with raw:
        stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if compressed else raw  # type: ignore[assignment]
        yield OpenFeed(stream, size, raw.tell)
