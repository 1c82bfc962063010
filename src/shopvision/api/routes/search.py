"""The page, ``POST /v1/search`` (a photo's look-alikes) and ``GET /v1/products/{id}/similar`` (more like this)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import FileResponse

from shopvision.api.actions import analyze, parse_where, ranked_page, search_depth, timed_search
from shopvision.api.deps import (
    CatalogDep,
    Category,
    K,
    Labels,
    Offset,
    ProductId,
    Reads,
    ScoreThreshold,
    ServicesDep,
    UploadDep,
    Where,
)
from shopvision.api.mappers import hits, provenance, scores
from shopvision.api.problems import Problem
from shopvision.api.product_paths import ProductRoute
from shopvision.api.schemas import SearchResult

STATIC = resources.files("shopvision.api") / "static"
"""The page and its assets."""
QUERY_CLASSES = 5
"""ImageNet classes a search answers with, beside its products."""

router = APIRouter(route_class=ProductRoute, tags=["search"])


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html")


@router.post("/v1/search", response_model=SearchResult, dependencies=[Reads],
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
                        results=hits(page), provenance=provenance(await shared.client.provenance()))


@router.get("/v1/products/{product_id:path}/similar", response_model=SearchResult, dependencies=[Reads],
            summary="More like this: products near a catalog product (no re-embedding)")
async def similar(shared: ServicesDep, catalog: CatalogDep, product_id: ProductId, k: K = 12,
                  label: Labels = None, where: Where = None, category: Category = None, offset: Offset = 0,
                  score_threshold: ScoreThreshold = None) -> SearchResult:
    conditions = await parse_where(catalog, where, category)
    depth = search_depth(k, offset)
    found = await timed_search(shared, catalog.similar(product_id, k=depth, labels=label, where=conditions))
    if found is None:
        raise Problem(404, "Unknown product", f"no product {product_id!r} in the catalog")
    page = ranked_page(found, offset=offset, k=k, threshold=score_threshold)
    return SearchResult(query=[], categories=[], results=hits(page),
                        provenance=provenance(await shared.client.provenance()))
