"""Prometheus metrics of the service, in a registry of its own (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
