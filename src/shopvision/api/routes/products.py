"""The catalog's products: photos, pages, one product, writes (PUT, PATCH, DELETE, bulk) and the summary."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from shopvision.api.actions import analyze, apply_bulk, patch_metadata, remove_product, store_product
from shopvision.api.bulk import read_bulk
from shopvision.api.deps import (
    MAX_PAGE_PRODUCTS,
    MAX_PRODUCT_ID_CHARS,
    CatalogDep,
    ProductId,
    Reads,
    ServicesDep,
    UploadDep,
    Writes,
)
from shopvision.api.mappers import record
from shopvision.api.photos import THUMBNAIL_SIZES
from shopvision.api.problems import Problem
from shopvision.api.product_paths import ProductRoute
from shopvision.api.schemas import BulkResult, CatalogSummary, ProductPage, ProductRecord, WriteResult
from shopvision.api.uploads import read_metadata_patch
from shopvision.contract import MAX_PRODUCT_PHOTOS

IMAGE_CACHING = {"Cache-Control": "private, max-age=300"}
"""A product's photo changes when it is replaced: browsers ask again after five minutes."""

router = APIRouter(route_class=ProductRoute, tags=["catalog"])


@router.get("/v1/products/{product_id:path}/image", dependencies=[Reads], response_class=Response,
            summary="The product's photo (photo=N for its others), or a JPEG thumbnail (size=128, 256 or 512)")
async def product_image(catalog: CatalogDep, product_id: ProductId, size: int | None = None,
                        photo: Annotated[int, Query(ge=0, lt=MAX_PRODUCT_PHOTOS, description=(
                            "Which photo: 0 the main one, 1... the others"))] = 0) -> Response:
    if size is not None and size not in THUMBNAIL_SIZES:
        raise Problem(422, "Invalid parameters", f"size: one of {', '.join(map(str, THUMBNAIL_SIZES))}")
    found = await catalog.image(product_id, size=size, photo=photo)
    if found is None:
        raise Problem(404, "No photo", f"no photo {photo} of product {product_id!r} in the catalog")
    kind, image = found
    return Response(image, media_type=kind, headers=IMAGE_CACHING)


@router.get("/v1/products", response_model=ProductPage, dependencies=[Reads],
            summary="The catalog's products, a page at a time, in product-id order")
async def list_products(catalog: CatalogDep, limit: Annotated[int, Query(ge=1, le=MAX_PAGE_PRODUCTS)] = 50,
                        cursor: Annotated[str | None, Query(max_length=MAX_PRODUCT_ID_CHARS, description=(
                            "next_cursor of the page before"))] = None) -> ProductPage:
    found = await catalog.page(after=cursor, limit=limit)
    return ProductPage(products=[record(product) for product in found],
                       next_cursor=found[-1].product_id if len(found) == limit else None)


@router.get("/v1/products/{product_id:path}", response_model=ProductRecord, dependencies=[Reads],
            summary="A catalog product")
async def get_product(catalog: CatalogDep, product_id: ProductId) -> ProductRecord:
    product = await catalog.get(product_id)
    if product is None:
        raise Problem(404, "Unknown product", f"no product {product_id!r} in the catalog")
    return record(product)


@router.put("/v1/products/{product_id:path}", response_model=WriteResult, dependencies=[Writes],
            summary="Add or replace a product (photo + metadata)")
async def put_product(shared: ServicesDep, catalog: CatalogDep, product_id: ProductId, upload: UploadDep,
                      response: Response) -> WriteResult:
    result = await analyze(shared, upload.data, top_k=1)
    product, replaced = await store_product(shared, catalog, product_id, [(upload.data, result)], upload.metadata)
    response.status_code = 200 if replaced else 201
    return WriteResult(product=record(product), created=not replaced)


@router.patch("/v1/products/{product_id:path}", response_model=ProductRecord, dependencies=[Writes],
              summary="Change a product's metadata (a JSON merge patch; null removes a field), nothing re-embedded")
async def patch_product(request: Request, catalog: CatalogDep, product_id: ProductId) -> ProductRecord:
    changes = await read_metadata_patch(request)
    return record(await patch_metadata(catalog, product_id, changes))


@router.delete("/v1/products/{product_id:path}", status_code=204, dependencies=[Writes], response_class=Response,
               summary="Remove a product")
async def delete_product(shared: ServicesDep, catalog: CatalogDep, product_id: ProductId) -> Response:
    await remove_product(shared, catalog, product_id)
    return Response(status_code=204)


@router.post("/v1/products:bulk", response_model=BulkResult, dependencies=[Writes],
             summary="Many product writes (NDJSON: put, patch, delete), a result per line")
async def bulk_products(request: Request, shared: ServicesDep, catalog: CatalogDep) -> BulkResult:
    entries = await read_bulk(request, max_image_bytes=shared.settings.max_image_bytes,
                              max_product_id_chars=MAX_PRODUCT_ID_CHARS)
    results = await apply_bulk(shared, catalog, entries)
    failed = sum(result.status >= 400 for result in results)
    return BulkResult(results=results, succeeded=len(results) - failed, failed=failed)


@router.get("/v1/catalog", response_model=CatalogSummary, dependencies=[Reads], summary="What the catalog holds")
async def catalog_summary(shared: ServicesDep, catalog: CatalogDep) -> CatalogSummary:
    stats = await catalog.stats()
    columns = await catalog.extra_columns()
    return CatalogSummary(engine=stats.engine, products=stats.products, index=stats.index, labels=stats.labels,
                          filter_columns=None if columns is None else sorted(columns),
                          model_source=stats.model_source, backbone=stats.backbone, dimension=stats.dimension,
                          demo=shared.settings.demo_banner)
