"""What the service is configured with, from the environment (one place for every variable)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shopvision._protocol import Tls
from shopvision.api.catalog_access import CatalogLimits
from shopvision.catalog.milvus_store import MilvusConnection
from shopvision.contract import MAX_IMAGE_BYTES

MULTIPART_OVERHEAD_BYTES = 64 * 1024
"""Room for the multipart envelope and the metadata fields around one image."""


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    triton_url: str = "grpc://localhost:8001"
    catalog: str | None = None
    """A folder (FAISS + SQLite), a ``.db`` file (Milvus Lite) or ``http://milvus:19530``; None: no search."""
    image_dir: Path | None = None
    """Where uploaded product photos are kept; default ``<catalog>/images`` for a folder catalog."""
    api_key: str | None = None
    """The write key (SHOPVISION_API_KEY): required for writes (``PUT``/``DELETE``), and it reads too; without
    one, writes are refused."""
    read_key: str | None = None
    """A key that only reads (SHOPVISION_API_READ_KEY), for the shop's front end where reads need a key."""
    read_key_required: bool = False
    """Whether reads need a key (SHOPVISION_API_READS_NEED_KEY; open by default); then ``/metrics``, ``/docs``
    and ``/openapi.json`` need it too. ``/healthz`` and ``/readyz`` stay open for probes."""
    cors_origins: tuple[str, ...] = ()
    max_image_bytes: int = MAX_IMAGE_BYTES
    """The preprocess model's own limit: a bigger upload could never be served."""
    max_in_flight: int = 16
    """Requests to Triton at once from this process; more wait in the service."""
    max_requests: int = 32
    """Requests in the service at once, counted before their bodies are read (SHOPVISION_API_MAX_REQUESTS):
    with uploads of up to 8 MiB, 32 hold at most 256 MiB, inside the chart's 2 GiB beside a 100,000-product
    catalog (832 MB). Past it: 503 with Retry-After. The probes are not counted."""
    timeout_s: float = 30.0
    demo_banner: str | None = None
    """Shown on the page when the catalog is generated demo data."""
    retry_after_s: int = 5
    catalog_limits: CatalogLimits = CatalogLimits()
    """Catalog threads, queue bound and wait limit (past them: 503 with Retry-After)."""
    catalog_ef_search: int | None = None
    """HNSW candidates per search in the embedded catalog (SHOPVISION_CATALOG_EF_SEARCH); None: its default, 128."""
    milvus: MilvusConnection = MilvusConnection()
    """Token and TLS files for a Milvus server (``MILVUS_TOKEN``, ``MILVUS_SERVER_PEM``, ...)."""
    triton_tls: Tls | None = None
    """Certificates for a ``grpcs://`` or ``https://`` SHOPVISION_URL: the CA that signed Triton's certificate
    (SHOPVISION_TRITON_CA) and, where Triton asks for one, this service's own (SHOPVISION_TRITON_CERT and
    SHOPVISION_TRITON_KEY). None: the system's CAs."""

    @property
    def max_request_bytes(self) -> int:
        return self.max_image_bytes + MULTIPART_OVERHEAD_BYTES

    def photo_directory(self) -> Path | None:
        if self.image_dir is not None:
            return self.image_dir
        if self.catalog and "://" not in self.catalog and not self.catalog.endswith(".db"):
            return Path(self.catalog) / "images"
        return None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ApiSettings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "triton_url": env.get("SHOPVISION_URL", cls.triton_url),
            "catalog": env.get("SHOPVISION_CATALOG") or None,
            "image_dir": Path(env["SHOPVISION_IMAGE_DIR"]) if env.get("SHOPVISION_IMAGE_DIR") else None,
            "api_key": env.get("SHOPVISION_API_KEY") or None,
            "read_key": env.get("SHOPVISION_API_READ_KEY") or None,
            "read_key_required": env.get("SHOPVISION_API_READS_NEED_KEY", "").lower() in ("1", "true", "yes"),
            "cors_origins": tuple(origin.strip() for origin in env.get("SHOPVISION_CORS_ORIGINS", "").split(",")
                                  if origin.strip()),
            "max_image_bytes": int(env.get("SHOPVISION_MAX_IMAGE_BYTES", MAX_IMAGE_BYTES)),
            "max_in_flight": int(env.get("SHOPVISION_API_MAX_IN_FLIGHT", cls.max_in_flight)),
            "max_requests": int(env.get("SHOPVISION_API_MAX_REQUESTS", cls.max_requests)),
            "catalog_limits": CatalogLimits(
                search_threads=int(env.get("SHOPVISION_CATALOG_THREADS", CatalogLimits.search_threads)),
                queued=int(env.get("SHOPVISION_CATALOG_QUEUE", CatalogLimits.queued)),
                wait_s=float(env.get("SHOPVISION_CATALOG_WAIT_S", CatalogLimits.wait_s))),
            "catalog_ef_search": int(env["SHOPVISION_CATALOG_EF_SEARCH"]) if env.get("SHOPVISION_CATALOG_EF_SEARCH")
            else None,
            "milvus": MilvusConnection.from_environment(env),
            "triton_tls": _triton_tls(env),
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]


def _triton_tls(env: Mapping[str, str]) -> Tls | None:
    files = Tls(ca_file=env.get("SHOPVISION_TRITON_CA") or None,
                certificate_file=env.get("SHOPVISION_TRITON_CERT") or None,
                key_file=env.get("SHOPVISION_TRITON_KEY") or None)
    return files if files != Tls() else None
