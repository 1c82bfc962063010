"""Product photos the service keeps: content-addressed files, durable before their product is, with
thumbnails made once (at write time for uploads), kept as files and served from memory."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from shopvision._files import atomic_write
from shopvision.contract import MAX_IMAGE_BYTES

THUMBNAIL_SIZES = (128, 256, 512)
THUMBNAIL_QUALITY = 85
THUMBNAIL_CACHE_BYTES = 64 * 2**20
"""Thumbnails kept in memory (about 6,000 of 256 px): a page's 12 are answered without touching a file."""
ORPHAN_GRACE_S = 3600.0
"""A photo no product references is removed at startup only when older than this: a younger one may belong
to a write still in flight (its photo is stored before its product is committed)."""
_DIGEST = re.compile(r"[0-9a-f]{64}")
_log = logging.getLogger(__name__)


class PhotoStore:
    """Uploaded photos under ``uploads/<sha256[:2]>/<sha256>`` (None: uploads are not kept), thumbnails under
    ``thumbnails/<sha256[:2]>/<sha256>-<size>.jpg`` (for catalog photos wherever they live, too).

    File names are the photo's sha256, never anything a client chose; products with the same photo share it.
    """

    def __init__(self, uploads: Path | None, thumbnails: Path | None = None) -> None:
        self.uploads = uploads
        self.thumbnails = thumbnails or (uploads / "thumbnails" if uploads is not None
                                         else Path(tempfile.mkdtemp(prefix="shopvision-thumbnails-")))

    def store(self, digest: str, data: bytes) -> str:
        """Keep an uploaded photo and make its thumbnails; returns the photo's path ("" when uploads are not kept).

        The photo is fsynced, its name too, before this returns: the product row committed after it never
        points at a file a crash lost. Idempotent and cheap when the files exist.
        """
        if self.uploads is None:
            return ""
        target = self.uploads / digest[:2] / digest
        if not target.exists():
            _write_durably(target, data)
        for size in THUMBNAIL_SIZES:
            if not self.thumbnail_path(digest, size).exists():
                self._make_thumbnail(digest, data, size)
        return str(target)

    def thumbnail_path(self, digest: str, size: int) -> Path:
        return self.thumbnails / digest[:2] / f"{digest}-{size}.jpg"

    def read_thumbnail(self, digest: str, size: int) -> bytes | None:
        """The thumbnail made earlier (at write time for uploads), or None."""
        try:
            return self.thumbnail_path(digest, size).read_bytes()
        except OSError:
            return None

    def read_photo(self, digest: str, recorded: str) -> bytes | None:
        """A product's photo exactly as it was indexed, or None.

        An upload is read from this store by its sha256, never from the path a database row holds; a photo that
        ``shopvision index build`` indexed where it lay (not copied here) from its recorded path. Either way the
        file must be a regular file reached without a symlink in its last step, and its bytes must have the
        product's sha256: a file swapped or linked elsewhere after indexing is not served, so the service never
        hands out bytes it was not given as the product's photo."""
        stored = self.uploads / digest[:2] / digest if self.uploads is not None and _DIGEST.fullmatch(digest) else None
        # An upload's row records the store's own path: each file is tried once.
        for path in dict.fromkeys(path for path in (stored, Path(recorded) if recorded else None) if path is not None):
            data = _read_regular_file(path)
            if data is None:
                continue
            if hashlib.sha256(data).hexdigest() == digest:
                return data
            _log.warning("not serving %s: its content is not the photo indexed (sha256 %s)", path, digest)
        return None

    def make_thumbnail(self, digest: str, recorded: str, size: int) -> bytes | None:
        """Make the thumbnail of a photo that has none yet (one indexed by ``shopvision index build``)."""
        data = self.read_photo(digest, recorded)
        return None if data is None else self._make_thumbnail(digest, data, size)

    def remove(self, digest: str) -> None:
        """Delete a photo no product references any more, with its thumbnails."""
        if not _DIGEST.fullmatch(digest):
            return  # not a name this store made
        if self.uploads is not None:
            (self.uploads / digest[:2] / digest).unlink(missing_ok=True)
        for size in THUMBNAIL_SIZES:
            self.thumbnail_path(digest, size).unlink(missing_ok=True)

    def sweep(self, in_use: set[str], *, older_than_s: float = ORPHAN_GRACE_S) -> int:
        """Remove photos, thumbnails and partial files no product references (left by a crash between a photo
        and its product, or by a version before orphans were removed); returns how many files went."""
        cutoff = time.time() - older_than_s
        removed = 0
        folders = [self.thumbnails] + ([self.uploads] if self.uploads is not None else [])
        for folder in folders:
            for path in folder.glob("??/*"):
                digest = path.name.split("-")[0]
                orphan = path.suffix == ".part" or (_DIGEST.fullmatch(digest) and digest not in in_use)
                try:
                    if orphan and path.is_file() and path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except OSError as error:  # removed meanwhile, or not ours to remove: leave it
                    _log.warning("cannot remove %s: %s", path, error)
        return removed

    def _make_thumbnail(self, digest: str, data: bytes, size: int) -> bytes | None:
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.draft("RGB", (size, size))
                thumbnail = image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError):
            return None  # not an image PIL decodes: the page shows no picture, the product stays searchable
        thumbnail.thumbnail((size, size))
        out = io.BytesIO()
        thumbnail.save(out, "JPEG", quality=THUMBNAIL_QUALITY)
        data = out.getvalue()
        atomic_write(self.thumbnail_path(digest, size), data)
        return data


class ThumbnailCache:
    """Thumbnails by (photo sha256, size), least recently used dropped past ``limit_bytes``. A photo's thumbnail
    never changes, so an entry is never stale; one of a deleted product is unreachable (its product is looked up
    first) and ages out."""

    def __init__(self, limit_bytes: int = THUMBNAIL_CACHE_BYTES) -> None:
        self._limit, self._held = limit_bytes, 0
        self._entries: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str, size: int) -> bytes | None:
        with self._lock:
            data = self._entries.get((digest, size))
            if data is not None:
                self._entries.move_to_end((digest, size))
            return data

    def put(self, digest: str, size: int, data: bytes) -> None:
        with self._lock:
            if (digest, size) in self._entries or len(data) > self._limit:
                return
            self._entries[(digest, size)] = data
            self._held += len(data)
            while self._held > self._limit:
                self._held -= len(self._entries.popitem(last=False)[1])


def _read_regular_file(path: Path, limit: int = MAX_IMAGE_BYTES) -> bytes | None:
    """The bytes of a regular file of at most ``limit`` bytes, opened without following a symlink; else None."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None  # missing, a symlink (ELOOP), or not ours to read
    with os.fdopen(descriptor, "rb") as stream:
        status = os.fstat(stream.fileno())
        if not stat.S_ISREG(status.st_mode) or status.st_size > limit:
            return None  # a FIFO, a device, a folder; or larger than any photo the model takes
        data = stream.read(limit + 1)
        return data if len(data) <= limit else None


def media_type(head: bytes) -> str:
    """The media type a photo's first bytes announce."""
    for prefix, kind in ((b"\xff\xd8", "image/jpeg"), (b"\x89PNG", "image/png"), (b"GIF8", "image/gif"),
                         (b"RIFF", "image/webp"), (b"BM", "image/bmp"), (b"II*\x00", "image/tiff"),
                         (b"MM\x00*", "image/tiff")):
        if head.startswith(prefix):
            return kind
    return "application/octet-stream"


def _write_durably(target: Path, data: bytes) -> None:
    atomic_write(target, data, durable=True)
