"""What the routes do: embed photos through Triton, search the catalog and write it. Each returns values or
raises a :class:`~shopvision.api.problems.Problem`, which the app's handlers turn into problem+json."""

from __future__ import annotations

import time
from collections.abc import Awaitable

from shopvision.aio import OnError
from shopvision.api import problems
from shopvision.api.bulk import BulkOperation, LineProblem
from shopvision.api.catalog_access import CatalogAccess
from shopvision.api.deps import MAX_RESULT_DEPTH, Services
from shopvision.api.mappers import SCORE_DECIMALS
from shopvision.api.problems import Problem
from shopvision.api.schemas import BulkLineResult
from shopvision.catalog import CATEGORY_COLUMN, Product, SearchHit, categorised
from shopvision.catalog.filters import Condition, FilterError, parse_condition
from shopvision.contract import MAX_METADATA_FIELDS
from shopvision.errors import NoCategoriesError, ShopvisionError
from shopvision.types import ImageResult


def ranked_page(found: list[SearchHit], *, offset: int, k: int, threshold: float | None) -> list[SearchHit]:
    """The k results after the first ``offset`` of a ranking searched ``offset + k`` deep, at or above the threshold."""
    # Compared as shown: a threshold copied from an answer keeps the product it was copied from.
    return [hit for hit in found[offset : offset + k]
            if threshold is None or round(hit.score, SCORE_DECIMALS) >= threshold]


def search_depth(k: int, offset: int) -> int:
    if k + offset > MAX_RESULT_DEPTH:
        raise Problem(422, "Invalid parameters", f"offset + k is {offset + k}; at most {MAX_RESULT_DEPTH}")
    return k + offset


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


async def timed_search(shared: Services, search: Awaitable[list[SearchHit] | None]) -> list[SearchHit] | None:
    started = time.perf_counter()
    try:
        return await search
    finally:
        shared.metrics.vector_search.observe(time.perf_counter() - started)
