"""What probes, Prometheus and operators call: liveness, readiness, metrics, and the docs behind the read key."""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shopvision.api.deps import Reads, ServicesDep
from shopvision.api.schemas import Readiness
from shopvision.errors import ShopvisionError

_log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness,
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


@router.get("/metrics", include_in_schema=False, dependencies=[Reads])
async def prometheus(shared: ServicesDep) -> Response:
    if shared.catalog is not None:
        shared.metrics.catalog_products.set(shared.catalog.products)
        for lane, pending in shared.catalog.queued().items():
            shared.metrics.catalog_queue.labels(lane).set(pending)
    return Response(generate_latest(shared.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def guarded_docs(app: FastAPI) -> APIRouter:
    """FastAPI's /docs and /openapi.json behind the read key. Swagger UI fetches the schema without a key, so a
    browser needs a proxy that adds the header; `curl -H 'Authorization: Bearer <key>'` needs nothing."""
    docs_router = APIRouter(dependencies=[Reads], include_in_schema=False)

    @docs_router.get("/openapi.json")
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @docs_router.get("/docs")
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="shopvision")

    return docs_router
