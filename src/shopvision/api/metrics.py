"""Prometheus metrics of the service, in a registry of its own (``GET /metrics``)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("shopvision_api_requests_total", "HTTP requests by route and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("shopvision_api_request_duration_seconds", "HTTP request latency by route",
                                 ["route", "method"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.triton = Histogram("shopvision_api_triton_duration_seconds", "Latency of the calls to Triton",
                                buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.vector_search = Histogram("shopvision_api_vector_search_duration_seconds",
                                       "Latency of catalog searches (vector search and metadata)",
                                       buckets=(0.0005, 0.001, 0.0025, *_LATENCY_BUCKETS), registry=self.registry)
        self.catalog_queue = Gauge("shopvision_api_catalog_queued", "Catalog operations waiting or running, by lane "
                                   "(past SHOPVISION_CATALOG_QUEUE a request gets 503)", ["lane"],
                                   registry=self.registry)
        self.catalog_products = Gauge("shopvision_api_catalog_products", "Products in the catalog",
                                      registry=self.registry)


class MeasuredRequests:
    """Counts every HTTP request and times it, by route template (never the raw path: product ids would make a
    series each). Plain ASGI, not ``@app.middleware("http")``, whose request and response wrapping cost more than
    serving a thumbnail from memory does."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self._app, self._metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app answers: an exception that escapes it becomes a 500 outside

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")  # the router notes the route in the scope
            self._metrics.latency.labels(route, scope["method"]).observe(time.perf_counter() - started)
            self._metrics.requests.labels(route, scope["method"], str(status)).inc()
