"""The HTTP API and the page: ``create_app(settings)`` builds the ASGI app ``shopvision api`` serves.

The layout follows FastAPI's full-stack template: this module makes the app and, in its lifespan, the services
every request shares; ``deps`` holds what routes depend on; ``routes/`` a module per resource; ``actions`` what
the routes do; ``mappers`` turns catalog and SDK values into the response models of ``schemas``; ``problems``
is the one set of error handlers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from shopvision import __version__
from shopvision._protocol import RetryPolicy
from shopvision.aio import AsyncClient
from shopvision.api import problems
from shopvision.api.admission import AdmissionLimit
from shopvision.api.catalog_access import CatalogAccess
from shopvision.api.deps import HeadProbe, Services
from shopvision.api.metrics import ApiMetrics, MeasuredRequests
from shopvision.api.routes import ROUTERS
from shopvision.api.routes.operations import guarded_docs
from shopvision.api.routes.search import STATIC
from shopvision.api.settings import ApiSettings


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
    # In this order: a product's views (/similar, /image) before the product itself.
    for router in ROUTERS:
        app.include_router(router)
    if guarded:
        app.include_router(guarded_docs(app))
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(AdmissionLimit, limit=settings.max_requests, retry_after_s=settings.retry_after_s)
    app.add_middleware(MeasuredRequests, metrics=metrics)  # outermost: it counts the requests refused at the door
    return app
