"""The HTTP API and the page: ``create_app(settings)`` builds the ASGI app ``shopvision api`` serves."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Annotated
from urllib.parse import quote, unquote_to_bytes

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shopvision import __version__
from shopvision._protocol import RetryPolicy
from shopvision.aio import AsyncClient, OnError
from shopvision.api import problems
from shopvision.api.admission import AdmissionLimit
from shopvision.api.bulk import BulkOperation, LineProblem, read_bulk
from shopvision.api.catalog_access import CatalogAccess
from shopvision.api.metrics import ApiMetrics, MeasuredRequests
from shopvision.api.photos import THUMBNAIL_SIZES
from shopvision.api.problems import Problem
from shopvision.api.product_paths import PRODUCT_VIEWS, ProductRoute, names_a_view
from shopvision.api.schemas import (
    BulkLineResult,
    BulkResult,
    CatalogSummary,
    Classification,
    ClassScore,
    PhotoRecord,
    ProductHit,
    ProductPage,
    ProductRecord,
    Provenance,
    Readiness,
    SearchResult,
    WriteResult,
)
from shopvision.api.settings import ApiSettings
from shopvision.api.uploads import Upload, read_image, read_metadata_patch
from shopvision.catalog import CATEGORY_COLUMN, Product, SearchHit, categorised
from shopvision.catalog.filters import Condition, FilterError, parse_condition
from shopvision.contract import MAX_FILTER_VALUES, MAX_METADATA_FIELDS, MAX_PRODUCT_PHOTOS
from shopvision.errors import NoCategoriesError, ShopvisionError
from shopvision.types import ImageResult, Prediction

MAX_K = 100
MAX_TOP_K = 20
MAX_PRODUCT_ID_CHARS = 1024
MAX_RESULT_DEPTH = 1000
"""offset + k at most: how deep into the ranking a search may page (each page searches that deep)."""
MAX_PAGE_PRODUCTS = 200
SCORE_DECIMALS = 6
"""Scores in answers are rounded to this many decimals."""
QUERY_CLASSES = 5
QUERY_CATEGORIES = 3
HEAD_PROBE_S = 10.0
"""How long the service trusts its last look at whether a categories head serves (one metadata call)."""
_STATIC = resources.files("shopvision.api") / "static"
_log = logging.getLogger(__name__)
_IMAGE_CACHING = {"Cache-Control": "private, max-age=300"}
"""A product's photo changes when it is replaced: browsers ask again after five minutes."""


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


def create_app(settings: ApiSettings) -> FastAPI:
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A short retry: a shopper waits on this request, and a 503 with Retry-After says more than a hang.
        client = AsyncClient(settings.triton_url, max_in_flight=settings.max_in_flight, timeout_s=settings.timeout_s,
                             retry=RetryPolicy(attempts=2, initial_backoff_s=0.2), tls=settings.triton_tls)
        catalog = None
        if settings.catalog:
            catalog = await CatalogAccess.open(settings.catalog, photos=settings.photo_directory(),
                                               limits=settings.catalog_limits, milvus=settings.milvus,
                                               ef_search=settings.catalog_ef_search)
        app.state.services = Services(settings, client, catalog, metrics, HeadProbe(client))
        try:
            yield
        finally:
            await client.close()
            if catalog is not None:
                await catalog.close()

    guarded = settings.read_key_required  # then the API's description and the metrics need a key too
    app = FastAPI(title="shopvision", version=__version__, lifespan=lifespan,
                  description="Visual search for a shop: classify a product photo, find the catalog products "
                              "that look alike, keep the catalog up to date.",
                  docs_url=None if guarded else "/docs", redoc_url=None if guarded else "/redoc",
                  openapi_url=None if guarded else "/openapi.json")
    problems.install(app, retry_after_s=settings.retry_after_s)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])

    app.include_router(_routes())
    if guarded:
        app.include_router(_guarded_docs(app))
    app.mount("/static", StaticFiles(directory=str(_STATIC)), name="static")
    app.add_middleware(AdmissionLimit, limit=settings.max_requests, retry_after_s=settings.retry_after_s)
    app.add_middleware(MeasuredRequests, metrics=metrics)  # outermost: it counts the requests refused at the door
    return app


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


def ranked_page(found: list[SearchHit], *, offset: int, k: int, threshold: float | None) -> list[SearchHit]:
    """The k results after the first ``offset`` of a ranking searched ``offset + k`` deep, at or above the threshold."""
    # Compared as shown: a threshold copied from an answer keeps the product it was copied from.
    return [hit for hit in found[offset : offset + k]
            if threshold is None or round(hit.score, SCORE_DECIMALS) >= threshold]


def search_depth(k: int, offset: int) -> int:
    if k + offset > MAX_RESULT_DEPTH:
        raise Problem(422, "Invalid parameters", f"offset + k is {offset + k}; at most {MAX_RESULT_DEPTH}")
    return k + offset


async def image_upload(request: Request, shared: ServicesDep) -> Upload:
    limits = shared.settings
    return await read_image(request, max_image_bytes=limits.max_image_bytes,
                            max_request_bytes=limits.max_request_bytes)


UploadDep = Annotated[Upload, Depends(image_upload)]


async def analyze(shared: Services, data: bytes, *, top_k: int) -> ImageResult:
    """One pass of the ensemble: ImageNet classes, the embedding, and the shop's categories while a head serves."""
    (result,) = await analyze_many(shared, [data], top_k=top_k, on_error="raise")
    return result


async def analyze_many(shared: Services, images: list[bytes], *, top_k: int,
                       on_error: OnError = "report") -> list[ImageResult]:
    """:func:`analyze` for several images (the SDK batches them); a refused image's result carries its error."""
    categories = await shared.head.categories()
    started = time.perf_counter()
    try:
        try:
            return await shared.client.analyze(images, top_k=top_k, categories=categories, on_error=on_error)
        except NoCategoriesError:
            shared.head.no_head()
            return await shared.client.analyze(images, top_k=top_k, on_error=on_error)
    finally:
        shared.metrics.triton.observe(time.perf_counter() - started)


async def store_product(shared: Services, catalog: CatalogAccess, product_id: str,
                        photos: list[tuple[bytes, ImageResult]], metadata: dict[str, str]) -> tuple[Product, bool]:
    """Store embedded photos (the main one first) as a product (PUT and a bulk put); returns it, and whether it
    replaced one. The main photo gives the product its label and category."""
    await catalog.check_model(await shared.client.provenance(), url=shared.client.url)
    main = photos[0][1]
    stored = await catalog.put(product_id, [(data, result.vector) for data, result in photos],
                               label=main.predictions[0].label, extra=categorised(metadata, main.categories))
    shared.metrics.catalog_products.set(catalog.products)
    return stored


async def patch_metadata(catalog: CatalogAccess, product_id: str, changes: dict[str, str | None]) -> Product:
    """Merge a metadata patch into a product (PATCH and a bulk patch)."""
    current = await catalog.get(product_id)
    if current is None:
        raise Problem(404, "Unknown product", f"no product {product_id!r} in the catalog")
    fields = {**current.extra, **changes}
    if sum(value is not None for value in fields.values()) > MAX_METADATA_FIELDS:
        raise Problem(422, "Invalid parameters", f"metadata: the patch leaves more than {MAX_METADATA_FIELDS} fields")
    product = await catalog.update_metadata(product_id, changes)
    if product is None:  # removed meanwhile
        raise Problem(404, "Unknown product", f"no product {product_id!r} in the catalog")
    return product


async def remove_product(shared: Services, catalog: CatalogAccess, product_id: str) -> None:
    """Remove a product (DELETE and a bulk delete)."""
    if not await catalog.remove(product_id):
        raise Problem(404, "Unknown product", f"no product {product_id!r} in the catalog")
    shared.metrics.catalog_products.set(catalog.products)


async def apply_bulk(shared: Services, catalog: CatalogAccess,
                     entries: list[BulkOperation | LineProblem]) -> list[BulkLineResult]:
    """Embed every put's photos (together, in the SDK's batches), then apply the lines in order, each on its own."""
    images = [(entry.line, image) for entry in entries if isinstance(entry, BulkOperation) for image in entry.images]
    analysed = await analyze_many(shared, [image for _, image in images], top_k=1) if images else []
    embedded: dict[int, list[tuple[bytes, ImageResult]]] = {}
    for (line, image), result in zip(images, analysed, strict=True):
        embedded.setdefault(line, []).append((image, result))
    results = []
    for entry in entries:
        if isinstance(entry, LineProblem):
            results.append(_line_result(entry.line, entry.product_id, entry.op, problem=entry.problem))
            continue
        try:
            sha256 = None
            if entry.op == "put":
                photos = embedded[entry.line]
                for number, (_, result) in enumerate(photos):
                    if result.error is not None:
                        raise Problem(400, "Invalid image", ("" if number == 0 else f"additional_images[{number - 1}]"
                                                             ": ") + result.error.reason)
                product, replaced = await store_product(shared, catalog, entry.product_id, photos,
                                                        {k: v for k, v in entry.metadata.items() if v is not None})
                status, sha256 = (200 if replaced else 201), product.content_sha256
            elif entry.op == "patch":
                await patch_metadata(catalog, entry.product_id, entry.metadata)
                status = 200
            else:
                await remove_product(shared, catalog, entry.product_id)
                status = 204
        except Problem as refused:
            results.append(_line_result(entry.line, entry.product_id, entry.op, problem=refused))
            continue
        except ShopvisionError as error:
            translated = problems.from_shopvision_error(error, retry_after_s=shared.settings.retry_after_s)
            results.append(_line_result(entry.line, entry.product_id, entry.op, problem=translated))
            continue
        results.append(BulkLineResult(line=entry.line, product_id=entry.product_id, op=entry.op, status=status,
                                      content_sha256=sha256))
    return results


def _line_result(line: int, product_id: str | None, op: str | None, *, problem: Problem) -> BulkLineResult:
    return BulkLineResult(line=line, product_id=product_id, op=op, status=problem.status, title=problem.title,
                          detail=problem.detail)


async def provenance(shared: Services) -> Provenance:
    served = await shared.client.provenance()
    return Provenance(source=served.source, synthetic=served.synthetic, model_sha256=served.model_sha256,
                      backbone=served.backbone, embedding_dim=served.embedding_dim)


async def parse_where(catalog: CatalogAccess, where: list[str] | None, category: str | None) -> list[Condition]:
    """The search's filters: ``where=price<50`` and the like (:mod:`shopvision.catalog.filters`), and the category."""
    found = [Condition(CATEGORY_COLUMN, "=", (category,))] if category else []
    for text in where or []:
        try:
            found.append(parse_condition(text))
        except FilterError as error:
            raise Problem(422, "Invalid parameters", f"where: {error}") from error
    if not found:
        return found
    known = await catalog.extra_columns()
    unknown = sorted({condition.column for condition in found} - known) if known is not None else []
    if unknown:
        raise Problem(422, "Invalid parameters", f"where: no products have the column(s) {', '.join(unknown)}; "
                      f"known: {', '.join(sorted(known or [])) or 'none'}")
    return found


def image_url(product_id: str, photo: int = 0) -> str:
    """A product's photo: its main one, or ``?photo=N`` for another."""
    return f"/v1/products/{quote(product_id, safe='')}/image" + (f"?photo={photo}" if photo else "")


def photo_urls(product_id: str, photos: int) -> list[str]:
    return [image_url(product_id, photo) for photo in range(photos)]


def hits(found: list[SearchHit]) -> list[ProductHit]:
    return [ProductHit(product_id=hit.product_id, score=round(hit.score, SCORE_DECIMALS), label=hit.label,
                       category=hit.extra.get(CATEGORY_COLUMN), extra=hit.extra,
                       image_url=image_url(hit.product_id, hit.photo), photo=hit.photo,
                       photo_urls=photo_urls(hit.product_id, max(1, len(hit.photos))))
            for hit in found]


def scores(predictions: list[Prediction]) -> list[ClassScore]:
    return [ClassScore(label=p.label, index=p.index, score=round(p.score, 6)) for p in predictions]


def record(product: Product) -> ProductRecord:
    return ProductRecord(product_id=product.product_id, label=product.label, extra=product.extra,
                         content_sha256=product.content_sha256, image_url=image_url(product.product_id),
                         photos=[PhotoRecord(image_url=image_url(product.product_id, number),
                                             content_sha256=photo.content_sha256)
                                 for number, photo in enumerate(product.photos)])


async def timed_search(shared: Services, search: Awaitable[list[SearchHit] | None]) -> list[SearchHit] | None:
    started = time.perf_counter()
    try:
        return await search
    finally:
        shared.metrics.vector_search.observe(time.perf_counter() - started)


def _guarded_docs(app: FastAPI) -> APIRouter:
    """FastAPI's /docs and /openapi.json behind the read key. Swagger UI fetches the schema without a key, so a
    browser needs a proxy that adds the header; `curl -H 'Authorization: Bearer <key>'` needs nothing."""
    router = APIRouter(dependencies=[Reads], include_in_schema=False)

    @router.get("/openapi.json")
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @router.get("/docs")
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="shopvision")

    return router


def _routes() -> APIRouter:
    router = APIRouter(route_class=ProductRoute)

    @router.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(_STATIC / "index.html"), media_type="text/html")

    @router.post("/v1/classify", response_model=Classification, dependencies=[Reads], tags=["inference"],
                 summary="Top-k ImageNet classes of a photo")
    async def classify(shared: ServicesDep, upload: UploadDep,
                       k: Annotated[int, Query(ge=1, le=MAX_TOP_K)] = 5) -> Classification:
        result = await analyze(shared, upload.data, top_k=k)
        return Classification(predictions=scores(result.predictions), categories=scores(result.categories),
                              provenance=await provenance(shared))

    @router.post("/v1/search", response_model=SearchResult, dependencies=[Reads], tags=["search"],
                 summary="The catalog products that look most like a photo")
    async def search(shared: ServicesDep, catalog: CatalogDep, upload: UploadDep, k: K = 12,
                     label: Labels = None, where: Where = None, category: Category = None, offset: Offset = 0,
                     score_threshold: ScoreThreshold = None) -> SearchResult:
        conditions = await parse_where(catalog, where, category)
        depth = search_depth(k, offset)
        result = await analyze(shared, upload.data, top_k=QUERY_CLASSES)
        found = await timed_search(shared, catalog.search(result.vector, k=depth, labels=label, where=conditions))
        page = ranked_page(found or [], offset=offset, k=k, threshold=score_threshold)
        return SearchResult(query=scores(result.predictions), categories=scores(result.categories),
                            results=hits(page), provenance=await provenance(shared))

    @router.get("/v1/products/{product_id:path}/similar", response_model=SearchResult, dependencies=[Reads],
                tags=["search"], summary="More like this: products near a catalog product (no re-embedding)")
    async def similar(shared: ServicesDep, catalog: CatalogDep, product_id: ProductId, k: K = 12,
                      label: Labels = None, where: Where = None, category: Category = None, offset: Offset = 0,
                      score_threshold: ScoreThreshold = None) -> SearchResult:
        conditions = await parse_where(catalog, where, category)
        depth = search_depth(k, offset)
        found = await timed_search(shared, catalog.similar(product_id, k=depth, labels=label, where=conditions))
        if found is None:
            raise Problem(404, "Unknown product", f"no product {product_id!r} in the catalog")
        page = ranked_page(found, offset=offset, k=k, threshold=score_threshold)
        return SearchResult(query=[], categories=[], results=hits(page), provenance=await provenance(shared))

    @router.get("/v1/products/{product_id:path}/image", dependencies=[Reads], tags=["catalog"],
                summary="The product's photo (photo=N for its others), or a JPEG thumbnail (size=128, 256 or 512)",
                response_class=Response)
    async def product_image(catalog: CatalogDep, product_id: ProductId, size: int | None = None,
                            photo: Annotated[int, Query(ge=0, lt=MAX_PRODUCT_PHOTOS, description=(
                                "Which photo: 0 the main one, 1... the others"))] = 0) -> Response:
        if size is not None and size not in THUMBNAIL_SIZES:
            raise Problem(422, "Invalid parameters", f"size: one of {', '.join(map(str, THUMBNAIL_SIZES))}")
        found = await catalog.image(product_id, size=size, photo=photo)
        if found is None:
            raise Problem(404, "No photo", f"no photo {photo} of product {product_id!r} in the catalog")
        kind, image = found
        return Response(image, media_type=kind, headers=_IMAGE_CACHING)

    @router.get("/v1/products", response_model=ProductPage, dependencies=[Reads], tags=["catalog"],
                summary="The catalog's products, a page at a time, in product-id order")
    async def list_products(catalog: CatalogDep, limit: Annotated[int, Query(ge=1, le=MAX_PAGE_PRODUCTS)] = 50,
                            cursor: Annotated[str | None, Query(max_length=MAX_PRODUCT_ID_CHARS, description=(
                                "next_cursor of the page before"))] = None) -> ProductPage:
        found = await catalog.page(after=cursor, limit=limit)
        return ProductPage(products=[record(product) for product in found],
                           next_cursor=found[-1].product_id if len(found) == limit else None)

    @router.get("/v1/products/{product_id:path}", response_model=ProductRecord, dependencies=[Reads],
                tags=["catalog"], summary="A catalog product")
    async def get_product(catalog: CatalogDep, product_id: ProductId) -> ProductRecord:
        product = await catalog.get(product_id)
        if product is None:
            raise Problem(404, "Unknown product", f"no product {product_id!r} in the catalog")
        return record(product)

    @router.put("/v1/products/{product_id:path}", response_model=WriteResult, tags=["catalog"],
                dependencies=[Depends(require_write_key)], summary="Add or replace a product (photo + metadata)")
    async def put_product(shared: ServicesDep, catalog: CatalogDep, product_id: ProductId, upload: UploadDep,
                          response: Response) -> WriteResult:
        result = await analyze(shared, upload.data, top_k=1)
        product, replaced = await store_product(shared, catalog, product_id, [(upload.data, result)], upload.metadata)
        response.status_code = 200 if replaced else 201
        return WriteResult(product=record(product), created=not replaced)

    @router.patch("/v1/products/{product_id:path}", response_model=ProductRecord, tags=["catalog"],
                  dependencies=[Depends(require_write_key)],
                  summary="Change a product's metadata (a JSON merge patch; null removes a field), nothing re-embedded")
    async def patch_product(request: Request, catalog: CatalogDep, product_id: ProductId) -> ProductRecord:
        changes = await read_metadata_patch(request)
        return record(await patch_metadata(catalog, product_id, changes))

    @router.delete("/v1/products/{product_id:path}", status_code=204, tags=["catalog"],
                   dependencies=[Depends(require_write_key)], summary="Remove a product", response_class=Response)
    async def delete_product(shared: ServicesDep, catalog: CatalogDep, product_id: ProductId) -> Response:
        await remove_product(shared, catalog, product_id)
        return Response(status_code=204)

    @router.post("/v1/products:bulk", response_model=BulkResult, tags=["catalog"],
                 dependencies=[Depends(require_write_key)],
                 summary="Many product writes (NDJSON: put, patch, delete), a result per line")
    async def bulk_products(request: Request, shared: ServicesDep, catalog: CatalogDep) -> BulkResult:
        entries = await read_bulk(request, max_image_bytes=shared.settings.max_image_bytes,
                                  max_product_id_chars=MAX_PRODUCT_ID_CHARS)
        results = await apply_bulk(shared, catalog, entries)
        failed = sum(result.status >= 400 for result in results)
        return BulkResult(results=results, succeeded=len(results) - failed, failed=failed)

    @router.get("/v1/catalog", response_model=CatalogSummary, dependencies=[Reads], tags=["catalog"],
                summary="What the catalog holds")
    async def catalog_summary(shared: ServicesDep, catalog: CatalogDep) -> CatalogSummary:
        stats = await catalog.stats()
        columns = await catalog.extra_columns()
        return CatalogSummary(engine=stats.engine, products=stats.products, index=stats.index, labels=stats.labels,
                              filter_columns=None if columns is None else sorted(columns),
                              model_source=stats.model_source, backbone=stats.backbone, dimension=stats.dimension,
                              demo=shared.settings.demo_banner)

    @router.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", response_model=Readiness, tags=["operations"],
                summary="Triton ready, catalog's index loaded, and both made by the same weights")
    async def readyz(shared: ServicesDep) -> JSONResponse:
        # From state only: a probe never queues behind catalog work (a long write, a rebuild, a checkpoint).
        checks: dict[str, str] = {}
        ready = await shared.client.is_ready()
        checks["triton"] = "ready" if ready else "not ready"
        catalog = shared.catalog
        if catalog is not None:
            checks["catalog"] = f"{catalog.state}, {catalog.products} products"
            ready = ready and catalog.ready
            if ready:
                try:
                    problem = catalog.model_problem(await shared.client.provenance())
                except ShopvisionError as error:  # its message may name Triton's URL: in the log only
                    _log.warning("readiness: the served model's provenance: %s", error)
                    problem = f"cannot read the served model's provenance ({type(error).__name__})"
                checks["weights"] = problem or "catalog and server agree"
                ready = problem is None
        body = Readiness(ready=ready, checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @router.get("/metrics", tags=["operations"], include_in_schema=False, dependencies=[Reads])
    async def prometheus(shared: ServicesDep) -> Response:
        if shared.catalog is not None:
            shared.metrics.catalog_products.set(shared.catalog.products)
            for lane, pending in shared.catalog.queued().items():
                shared.metrics.catalog_queue.labels(lane).set(pending)
        return Response(generate_latest(shared.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


