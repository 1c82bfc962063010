"""The catalog behind the service: every call runs on one dedicated thread, off the event loop.

One thread because the embedded engine's SQLite connection belongs to the thread that opened it,
and because it serialises writes and searches: a search never sees half of a write.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from shopvision.catalog import Catalog, CatalogStats, Product, SearchHit
from shopvision.types import WeightsProvenance

T = TypeVar("T")
THUMBNAIL_SIZES = (128, 256, 512)


class CatalogAccess:
    def __init__(self, catalog: Catalog, executor: ThreadPoolExecutor, photos: Path | None) -> None:
        self._catalog, self._executor, self._photos = catalog, executor, photos

    @classmethod
    async def open(cls, location: str, *, photos: Path | None) -> CatalogAccess:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, _one_search_thread)  # OpenMP's thread count is per calling thread
        catalog = await loop.run_in_executor(executor, lambda: Catalog.open(location))
        return cls(catalog, executor, photos)

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def close(self) -> None:
        await self._run(self._catalog.close)
        self._executor.shutdown(wait=True)

    async def check_model(self, served: WeightsProvenance, *, url: str) -> None:
        await self._run(lambda: self._catalog.check_model(served, url=url))

    async def search(self, vector: np.ndarray, *, k: int, labels: Sequence[str] | None,
                     where: Mapping[str, str]) -> list[SearchHit]:
        return await self._run(lambda: self._catalog.search(vector, k=k, labels=labels, where=where or None))

    async def similar(self, product_id: str, *, k: int, labels: Sequence[str] | None,
                      where: Mapping[str, str]) -> list[SearchHit] | None:
        return await self._run(lambda: self._catalog.similar(product_id, k=k, labels=labels, where=where or None))

    async def get(self, product_id: str) -> Product | None:
        return await self._run(lambda: self._catalog.get(product_id))

    async def extra_columns(self) -> frozenset[str] | None:
        return await self._run(self._catalog.extra_columns)

    async def stats(self) -> CatalogStats:
        return await self._run(self._catalog.stats)

    async def count(self) -> int:
        return await self._run(self._catalog.count)

    async def put(self, product_id: str, data: bytes, vector: np.ndarray, *, label: str,
                  extra: Mapping[str, str]) -> bool:
        """Store the photo, then the product: True when it replaced one. A failure leaves the catalog as it was.

        SQLite commits each write; the search index is saved when the service stops (and rebuilt from SQLite
        after a crash), not on every write.
        """
        def put() -> bool:
            digest = hashlib.sha256(data).hexdigest()
            path = self._store_photo(digest, data)
            existed = self._catalog.get(product_id) is not None
            product = Product(product_id=product_id, path=path, content_sha256=digest, label=label, extra=dict(extra))
            self._catalog.upsert([product], vector[np.newaxis])
            return existed

        return await self._run(put)

    async def remove(self, product_id: str) -> bool:
        return await self._run(lambda: self._catalog.remove([product_id]) > 0)

    async def photo(self, product: Product, *, size: int | None) -> tuple[bytes, str] | None:
        """The product's stored photo (or a JPEG thumbnail of it), read from the path the catalog recorded."""
        def read() -> tuple[bytes, str] | None:
            path = Path(product.path)
            if not product.path or not path.is_file():
                return None
            data = path.read_bytes()
            if size is None:
                return data, _media_type(data)
            with Image.open(io.BytesIO(data)) as image:
                image.draft("RGB", (size, size))
                thumbnail = image.convert("RGB")
                thumbnail.thumbnail((size, size))
                out = io.BytesIO()
                thumbnail.save(out, "JPEG", quality=85)
            return out.getvalue(), "image/jpeg"

        return await self._run(read)

    def _store_photo(self, digest: str, data: bytes) -> str:
        """Content-addressed: the file name is the photo's sha256, never anything a client chose."""
        if self._photos is None:
            return ""
        target = self._photos / digest[:2] / digest
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, partial = tempfile.mkstemp(dir=target.parent, suffix=".part")
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(partial, target)
        return str(target)


def _one_search_thread() -> None:
    """One query at a time gains nothing from FAISS's OpenMP threads, which next to Triton only wait for
    (and spin on) cores that ONNX Runtime's threads hold right after each inference."""
    try:
        import faiss
    except ImportError:  # a Milvus catalog: no FAISS in this process
        return
    faiss.omp_set_num_threads(1)


def _media_type(data: bytes) -> str:
    for prefix, media_type in ((b"\xff\xd8", "image/jpeg"), (b"\x89PNG", "image/png"), (b"GIF8", "image/gif"),
                               (b"RIFF", "image/webp"), (b"BM", "image/bmp")):
        if data.startswith(prefix):
            return media_type
    return "application/octet-stream"
