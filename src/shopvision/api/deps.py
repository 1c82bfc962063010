"""What routes depend on: the shared services, the API keys, the product id, the upload and the query
parameters, each an ``Annotated`` dependency (FastAPI's full-stack template keeps them here)."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, unquote_to_bytes

from fastapi import Depends, Query, Request

from shopvision.aio import AsyncClient
from shopvision.api.catalog_access import CatalogAccess
from shopvision.api.metrics import ApiMetrics
from shopvision.api.problems import Problem
from shopvision.api.product_paths import PRODUCT_VIEWS, names_a_view
from shopvision.api.settings import ApiSettings
from shopvision.api.uploads import Upload, read_image
from shopvision.contract import MAX_FILTER_VALUES

MAX_K = 100
MAX_TOP_K = 20
MAX_PRODUCT_ID_CHARS = 1024
MAX_RESULT_DEPTH = 1000
"""offset + k at most: how deep into the ranking a search may page (each page searches that deep)."""
MAX_PAGE_PRODUCTS = 200
QUERY_CATEGORIES = 3
HEAD_PROBE_S = 10.0
"""How long the service trusts its last look at whether a categories head serves (one metadata call)."""


@dataclass
class Services:
    """What every request shares, made once in the app's lifespan."""

    settings: ApiSettings
    client: AsyncClient
    catalog: CatalogAccess | None
    metrics: ApiMetrics
    head: HeadProbe


class HeadProbe:
    """Whether a categories head serves, looked up at most every ``HEAD_PROBE_S``: a promotion or rollback
    shows in answers within that time, and a request never pays for a failed ask."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._serves = False
        self._checked_at = -HEAD_PROBE_S

    async def categories(self) -> int:
        """How many categories to ask the ensemble for: ``QUERY_CATEGORIES`` while a head serves, else 0."""
        if time.monotonic() - self._checked_at >= HEAD_PROBE_S:
            self._serves = await self._client.serves_categories()
            self._checked_at = time.monotonic()
        return QUERY_CATEGORIES if self._serves else 0

    def no_head(self) -> None:
        """The server said no head serves (removed since the last look): stop asking until the next look."""
        self._serves = False
        self._checked_at = time.monotonic()


# The dependencies below are `async def` though they never wait: FastAPI runs a plain `def` dependency on a
# worker thread, a hop per dependency per request that cost more than serving a thumbnail from memory.
async def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


def _given_key(request: Request) -> str | None:
    return request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ") or None


def _matches(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())  # constant time


def _check_key(request: Request, settings: ApiSettings, *, write: bool) -> None:
    """Writes need the write key (SHOPVISION_API_KEY); reads, where they need a key, take it or the read key."""
    if settings.api_key is None and (write or settings.read_key is None):
        raise Problem(403, "Writes are disabled" if write else "Reads are disabled",
                      "this service has no API key (SHOPVISION_API_KEY), so it takes no catalog writes" if write else
                      "reads need a key (SHOPVISION_API_READS_NEED_KEY) but none is configured")
    given = _given_key(request)
    if given is None:
        raise Problem(401, "API key required", "send the key as 'Authorization: Bearer <key>' or 'X-API-Key'",
                      headers={"WWW-Authenticate": "Bearer"})
    if _matches(given, settings.api_key):
        return
    if _matches(given, settings.read_key):
        if not write:
            return
        raise Problem(403, "Read-only key", "this key reads; writes need the write key (SHOPVISION_API_KEY)")
    raise Problem(403, "Wrong API key", "the API key is not this service's")


async def require_write_key(request: Request, shared: ServicesDep) -> None:
    _check_key(request, shared.settings, write=True)


async def require_read_key(request: Request, shared: ServicesDep) -> None:
    if shared.settings.read_key_required:
        _check_key(request, shared.settings, write=False)


async def catalog_of(shared: ServicesDep) -> CatalogAccess:
    if shared.catalog is None:
        raise Problem(404, "No catalog", "this service has no catalog (SHOPVISION_CATALOG): only /v1/classify works")
    return shared.catalog


async def product_id_of(request: Request, product_id: str) -> str:
    """The product id exactly as sent: data, never a path; UTF-8, not empty, at most 1,024 characters."""
    try:
        unquote_to_bytes(request.scope.get("raw_path", b"").decode("ascii")).decode("utf-8")
    except UnicodeDecodeError as error:
        raise Problem(400, "Invalid product id", "product ids must be UTF-8") from error
    if not product_id or len(product_id) > MAX_PRODUCT_ID_CHARS:
        raise Problem(422, "Invalid product id", f"a product id has 1 to {MAX_PRODUCT_ID_CHARS} characters, "
                      f"not {len(product_id)}")
    if request.method in ("PUT", "PATCH", "DELETE") and names_a_view(request.scope):
        raise Problem(422, "Ambiguous product id",
                      f"{product_id!r} ends in a view's name ({', '.join('/' + view for view in PRODUCT_VIEWS)}): "
                      f"send it with its slashes encoded, /v1/products/{quote(product_id, safe='')}, so that it "
                      "reads back as the product, not as a view of another")
    return product_id


Reads = Depends(require_read_key)
Writes = Depends(require_write_key)
CatalogDep = Annotated[CatalogAccess, Depends(catalog_of)]
ProductId = Annotated[str, Depends(product_id_of)]
K = Annotated[int, Query(ge=1, le=MAX_K, description="How many products")]
Labels = Annotated[list[str] | None, Query(alias="label", max_length=MAX_FILTER_VALUES,
                                           description="Keep products with one of these labels")]
Where = Annotated[list[str] | None, Query(max_length=MAX_FILTER_VALUES,
                                          description="Keep products whose metadata passes every filter: "
                                                      "colour=red, colour!=red, price<50 (<=, >, >= compare numbers), "
                                                      "brand in (acme,zenith), gtin exists")]
Category = Annotated[str | None, Query(description="Keep products of this category (the 'category' column)")]
Offset = Annotated[int, Query(ge=0, le=MAX_RESULT_DEPTH - 1,
                              description=f"Skip this many of the best products (offset + k <= {MAX_RESULT_DEPTH})")]
ScoreThreshold = Annotated[float | None, Query(ge=-1.0, le=1.0, description="Keep products at least this similar "
                                                                            "(cosine similarity, 1.0 = the same)")]


async def image_upload(request: Request, shared: ServicesDep) -> Upload:
    limits = shared.settings
    return await read_image(request, max_image_bytes=limits.max_image_bytes,
                            max_request_bytes=limits.max_request_bytes)


UploadDep = Annotated[Upload, Depends(image_upload)]
