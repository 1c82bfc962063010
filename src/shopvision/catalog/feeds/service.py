"""The search service as a feed sync's target, through its HTTP API: ``index sync FEED --service URL``.

The service stays the catalog's single writer: the sync reads the products with ``GET /v1/products`` and sends its
changes with ``POST /v1/products:bulk`` (photos to embed, metadata patches, deletes), which the service applies
through the same write lane as every other write. This is how the chart's CronJob syncs: its pod cannot share the
service's volume, and two writers of one embedded catalog would each keep an index the other does not see.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from shopvision._protocol import RetryPolicy
from shopvision.catalog._model import Photo, Product, ProductPhoto
from shopvision.catalog.feeds.errors import FeedError
from shopvision.contract import MAX_BULK_BYTES, MAX_BULK_LINES

API_KEY_ENV = "SHOPVISION_API_KEY"
PAGE = 200
"""Products a listing asks for at once: the service's most (MAX_PAGE_PRODUCTS)."""
BULK_BYTES = MAX_BULK_BYTES - 1024 * 1024
"""What one bulk request carries at most, under the service's limit by a margin for the JSON around the photos."""
RETRIES = 6
"""Tries after the first of a request the service turned away for load (429, 503): it says when to come back."""


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class ServiceCatalog:
    """The part of :class:`~shopvision.catalog.Catalog` a sync uses, over the service's HTTP API."""

    def __init__(self, url: str, *, api_key: str | None, timeout_s: float = 300.0, verify: str | bool = True) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.location = url.rstrip("/")
        self._http = httpx.Client(base_url=self.location, headers=headers, timeout=timeout_s, verify=verify)

    def page(self, *, after: str | None = None, limit: int = PAGE) -> list[Product]:
        params: dict[str, Any] = {"limit": min(limit, PAGE)}
        if after is not None:
            params["cursor"] = after
        listed = self._request("GET", "/v1/products", params=params).json()["products"]
        products = [Product(product_id=item["product_id"], path=item["image_url"],
                            content_sha256=item["content_sha256"], label=item["label"], extra=item["extra"],
                            more_photos=tuple(ProductPhoto(photo["image_url"], photo["content_sha256"])
                                              for photo in item.get("photos", [])[1:]))
                    for item in listed]
        return products

    def index_photos(self, photos: Sequence[Photo], *, categories: int | None = None
                     ) -> tuple[list[Product], list[tuple[str, str]]]:
        by_id: dict[str, list[Photo]] = {}
        for photo in photos:  # a product's photos are one put, its main one first
            by_id.setdefault(photo.product_id, []).append(photo)
        lines = [{"op": "put", "product_id": product_id, "image": _base64(group[0].data),
                  "additional_images": [_base64(photo.data) for photo in group[1:]], "metadata": group[0].extra}
                 for product_id, group in by_id.items()]
        stored, failed = [], []
        for result in self._bulk(lines):
            product_id = result["product_id"]
            if result["status"] >= 400:
                failed.append((product_id, f"{result['title']}: {result['detail']}"))
                continue
            main, *more = by_id[product_id]
            stored.append(Product(product_id=product_id, path=main.source, content_sha256=result["content_sha256"],
                                  label="", extra=dict(main.extra),
                                  more_photos=tuple(ProductPhoto(photo.source, photo.content_sha256)
                                                    for photo in more)))
        return stored, failed

    def rewrite_metadata(self, products: Sequence[Product]) -> list[Product]:
        """Each product's metadata replaced by its own: sent as a merge patch from what the service holds now (read
        first, so that the sync needs to keep no copy of the catalog's metadata)."""
        patches: dict[str, dict[str, str | None]] = {}
        for product in products:
            held = self._request("GET", f"/v1/products/{quote(product.product_id, safe='')}", passed=(404,))
            if held.status_code == 404:  # removed meanwhile
                continue
            before: dict[str, str] = held.json()["extra"]
            patch: dict[str, str | None] = {key: None for key in before if key not in product.extra}
            patch.update({key: value for key, value in product.extra.items() if before.get(key) != value})
            patches[product.product_id] = patch
        by_id = {product.product_id: product for product in products}
        return [by_id[product_id] for product_id in self._patch(patches)]

    def patch_metadata(self, patches: Mapping[str, Mapping[str, str | None]]) -> list[Product]:
        """Merge patches of products' metadata; returns the products patched, their metadata as the service
        answered it unknown here (only their ids are meant to be read)."""
        return [Product(product_id=product_id, path="", content_sha256="", label="")
                for product_id in self._patch(patches)]

    def _patch(self, patches: Mapping[str, Mapping[str, str | None]]) -> list[str]:
        results = self._bulk([{"op": "patch", "product_id": product_id, "metadata": dict(patch)}
                              for product_id, patch in patches.items()])
        return [result["product_id"] for result in results if result["status"] < 400]

    def remove(self, product_ids: Sequence[str]) -> int:
        results = self._bulk([{"op": "delete", "product_id": product_id} for product_id in product_ids])
        return sum(result["status"] == 204 for result in results)

    def flush(self) -> None:
        """Nothing to do: each bulk request is durable when the service answers it."""

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceCatalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _bulk(self, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send lines in requests within the service's limits; the results of all of them, in order."""
        results: list[dict[str, Any]] = []
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            encoded = json.dumps(line).encode() + b"\n"
            if chunk and (len(chunk) == MAX_BULK_LINES or size + len(encoded) > BULK_BYTES):
                results += self._send_bulk(chunk)
                chunk, size = [], 0
            chunk.append(encoded)
            size += len(encoded)
        if chunk:
            results += self._send_bulk(chunk)
        return results

    def _send_bulk(self, chunk: list[bytes]) -> list[dict[str, Any]]:
        answer = self._request("POST", "/v1/products:bulk", content=b"".join(chunk),
                               headers={"Content-Type": "application/x-ndjson"})
        results: list[dict[str, Any]] = answer.json()["results"]
        return results

    def _request(self, method: str, path: str, *, passed: tuple[int, ...] = (), **options: Any) -> httpx.Response:
        """The answer, retried while the service is unreachable or turns the request away for load; a failure
        status raises FeedError, unless it is one of ``passed``."""
        delays = RetryPolicy(attempts=RETRIES + 1, initial_backoff_s=0.5, max_backoff_s=30.0).delays()
        while True:
            try:
                answer = self._http.request(method, path, **options)
            except httpx.TransportError as error:
                if (delay := next(delays, None)) is None:
                    raise FeedError(f"{self.location}: cannot reach the search service: {error}") from error
                time.sleep(delay)
                continue
            if answer.status_code in (429, 503) and (delay := next(delays, None)) is not None:
                retry_after = answer.headers.get("retry-after", "")
                time.sleep(max(delay, min(30.0, float(retry_after))) if retry_after.isdigit() else delay)
                continue
            if answer.status_code >= 400 and answer.status_code not in passed:
                try:
                    detail = answer.json().get("detail", answer.text)
                except ValueError:
                    detail = answer.text
                raise FeedError(f"{self.location}{path}: {answer.status_code} {detail}")
            return answer
